// End-to-end check of a fedmesh gateway with the official openai SDK.
//
//   OPENAI_BASE_URL   gateway base URL including /v1 (e.g. http://127.0.0.1:8080/v1)
//   OPENAI_API_KEY    a valid gateway key
//   FED_MODEL         chat model (default: the first model with "generate" in /v1/models)
//   FED_EMBED_MODEL   embeddings model (default: the first model with "embed")
//   FED_UNKNOWN_MODEL a model no node serves (default: no-such-model)
//   FED_AUDIO_MODEL   a transcription model: adds a check that sends an 8 MB
//                     audio file (out of band through fed_blobs)
//
// Runs six checks (seven with FED_AUDIO_MODEL) and exits non-zero with a
// message naming the first failure.
import OpenAI, { toFile } from 'openai';

const baseURL = process.env.OPENAI_BASE_URL;
const apiKey = process.env.OPENAI_API_KEY;
if (!baseURL || !apiKey) {
  console.error('FAIL setup: OPENAI_BASE_URL and OPENAI_API_KEY must be set');
  process.exit(2);
}
const opts = { baseURL, maxRetries: 0, timeout: 20_000 };
const client = new OpenAI({ ...opts, apiKey });

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function expectStatus(name, status, fn) {
  try {
    await fn();
  } catch (err) {
    assert(err instanceof OpenAI.APIError, `${name}: expected an APIError, got ${err}`);
    assert(err.status === status, `${name}: expected HTTP ${status}, got ${err.status} (${err.message})`);
    assert(err.error && typeof err.error.message === 'string' && err.error.code,
      `${name}: error body lacks message/code: ${JSON.stringify(err.error)}`);
    return err;
  }
  throw new Error(`${name}: expected HTTP ${status}, the call succeeded`);
}

let models = [];
let chatModel = process.env.FED_MODEL;
let embedModel = process.env.FED_EMBED_MODEL;
const unknownModel = process.env.FED_UNKNOWN_MODEL || 'no-such-model';

const checks = [
  ['models list', async () => {
    const page = await client.models.list();
    models = page.data;
    assert(Array.isArray(models) && models.length > 0, `no models listed: ${JSON.stringify(page.data)}`);
    for (const m of models) assert(typeof m.id === 'string' && m.object === 'model', `bad model entry ${JSON.stringify(m)}`);
    const withCap = (c) => models.find((m) => Array.isArray(m.capabilities) && m.capabilities.includes(c));
    chatModel ||= withCap('generate')?.id;
    embedModel ||= withCap('embed')?.id || chatModel;
    assert(chatModel, 'no chat model: set FED_MODEL or register a generate model');
    assert(models.some((m) => m.id === chatModel), `chat model ${chatModel} not in the list ${models.map((m) => m.id)}`);
  }],
  ['chat completion', async () => {
    const r = await client.chat.completions.create({ model: chatModel, messages: [{ role: 'user', content: 'Say hello' }] });
    assert(r.object === 'chat.completion', `object is ${r.object}`);
    assert(r.choices.length === 1, `${r.choices.length} choices`);
    const c = r.choices[0];
    assert(c.message.role === 'assistant', `role ${c.message.role}`);
    assert(typeof c.message.content === 'string' && c.message.content.length > 0, 'empty content');
    assert(c.finish_reason === 'stop', `finish_reason ${c.finish_reason}`);
  }],
  ['streamed chat completion', async () => {
    const stream = await client.chat.completions.create({
      model: chatModel, stream: true, messages: [{ role: 'user', content: 'Count to three' }],
    });
    let text = '';
    let contentChunks = 0;
    let finish = null;
    for await (const chunk of stream) {
      assert(chunk.object === 'chat.completion.chunk', `chunk object ${chunk.object}`);
      const ch = chunk.choices[0];
      if (!ch) continue;
      if (ch.delta?.content) {
        contentChunks++;
        text += ch.delta.content;
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    assert(contentChunks >= 1 && text.length > 0, 'stream carried no content');
    assert(finish === 'stop', `stream finish_reason ${finish}`);
    console.log(`  streamed ${contentChunks} chunks: ${JSON.stringify(text.slice(0, 60))}`);
  }],
  ['embeddings', async () => {
    const r = await client.embeddings.create({ model: embedModel, input: 'hello mesh' });
    assert(r.data.length === 1, `${r.data.length} embeddings`);
    const v = r.data[0].embedding;
    assert(Array.isArray(v) && v.length > 0, `embedding is not a vector: ${JSON.stringify(v)}`);
    assert(v.every((x) => typeof x === 'number' && Number.isFinite(x)), 'embedding has non-numbers');
  }],
  ['401 with a bad key', async () => {
    const bad = new OpenAI({ ...opts, apiKey: 'sk-definitely-not-valid' });
    const err = await expectStatus('bad key', 401, () => bad.models.list());
    assert(err instanceof OpenAI.AuthenticationError, `not an AuthenticationError: ${err.constructor.name}`);
  }],
  ['404 for an unknown model', async () => {
    const err = await expectStatus('unknown model', 404, () =>
      client.chat.completions.create({ model: unknownModel, messages: [{ role: 'user', content: 'hi' }] }));
    assert(err instanceof OpenAI.NotFoundError, `not a NotFoundError: ${err.constructor.name}`);
  }],
];
const audioModel = process.env.FED_AUDIO_MODEL;
if (audioModel) {
  checks.push(['8 MB audio transcription', async () => {
    const audio = Buffer.alloc(8 << 20, 7);
    const r = await client.audio.transcriptions.create({ file: await toFile(audio, 'talk.wav'), model: audioModel });
    assert(typeof r.text === 'string' && r.text.length > 0, `no transcription text: ${JSON.stringify(r).slice(0, 200)}`);
  }]);
}

for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (err) {
    console.error(`FAIL ${name}: ${err?.message ?? err}`);
    process.exit(1);
  }
}
console.log(`all ${checks.length} checks passed against ${baseURL} (chat ${chatModel}, embed ${embedModel})`);
