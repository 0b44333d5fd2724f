package simserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// testScale runs the h100 profile 20× faster than real time: a step is
// 0.6 ms.
const testScale = 20

func startSim(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.TimeScale = max(cfg.TimeScale, testScale)
	cfg.Log = natsembed.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Stop()) })
	return s
}

func post(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

// answerJSON is the part of an OpenAI answer the tests read.
type answerJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		TotalTokens         int `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
	} `json:"error"`
}

// result is an answer read whole or from a stream.
type result struct {
	status   int
	text     string
	pieces   int // stream events that carried text
	finish   string
	usage    []int // prompt, completion, total, cached (from the last usage seen)
	objects  []string
	firstRol string
	errMsg   string
}

func call(t *testing.T, s *Server, path, body string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := post(t, ctx, s.URL()+path, body)
	defer resp.Body.Close()
	res := result{status: resp.StatusCode}
	read := func(a answerJSON) {
		res.objects = append(res.objects, a.Object)
		if a.Error != nil {
			res.errMsg = a.Error.Message
			assert.Equal(t, resp.StatusCode, a.Error.Code)
		}
		if u := a.Usage; u != nil {
			res.usage = []int{u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.PromptTokensDetails.CachedTokens}
		}
		for _, ch := range a.Choices {
			var piece string
			switch {
			case ch.Message != nil:
				piece = ch.Message.Content
			case ch.Delta != nil:
				if ch.Delta.Role != nil && res.firstRol == "" {
					res.firstRol = *ch.Delta.Role
				}
				if ch.Delta.Content != nil {
					piece = *ch.Delta.Content
				}
			case ch.Text != nil:
				piece = *ch.Text
			}
			if piece != "" {
				res.pieces++
			}
			res.text += piece
			if ch.FinishReason != nil {
				res.finish = *ch.FinishReason
			}
		}
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		r := openai.NewSSEReader(resp.Body)
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				t.Fatal("stream ended without [DONE]")
			}
			require.NoError(t, err)
			if string(ev.Data) == "[DONE]" {
				return res
			}
			var a answerJSON
			require.NoError(t, json.Unmarshal(ev.Data, &a), "event %s", ev.Data)
			read(a)
		}
	}
	var a answerJSON
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		require.NoError(t, json.Unmarshal(data, &a), "answer %s", data)
	}
	read(a)
	return res
}

func chatBody(content string, extra string) string {
	b, _ := json.Marshal(content)
	return fmt.Sprintf(`{"model":"m1","messages":[{"role":"user","content":%s}]%s}`, b, extra)
}

func TestSimHTTPGenerate(t *testing.T) {
	s := startSim(t, Config{Models: []string{"m1", "m2"}, Seed: 3})
	chatPrompt := len(tokenize("<|user|>\nhello sim<|end|>\n<|assistant|>\n"))
	cases := []struct {
		name, path, body string
		wantObject       string
		wantPieces       int // 1 for a whole answer
		wantFinish       string
		wantTokens       int // 0: the model's own length
		wantUsage        bool
		prompt           int
	}{
		{"chat whole", "/v1/chat/completions", chatBody("hello sim", `,"max_tokens":7,"ignore_eos":true`),
			"chat.completion", 1, FinishLength, 7, true, chatPrompt},
		{"chat whole, own length", "/v1/chat/completions", chatBody("hello sim", ""),
			"chat.completion", 1, FinishStop, 0, true, chatPrompt},
		{"chat stream", "/v1/chat/completions", chatBody("hello sim", `,"max_tokens":5,"ignore_eos":true,"stream":true`),
			"chat.completion.chunk", 5, FinishLength, 5, false, chatPrompt},
		{"chat stream with usage", "/v1/chat/completions", chatBody("hello sim", `,"max_completion_tokens":6,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}`),
			"chat.completion.chunk", 6, FinishLength, 6, true, chatPrompt},
		{"chat stream, continuous usage", "/v1/chat/completions", chatBody("hello sim", `,"max_tokens":3,"ignore_eos":true,"stream":true,"stream_options":{"continuous_usage_stats":true}`),
			"chat.completion.chunk", 3, FinishLength, 3, true, chatPrompt},
		{"completion whole", "/v1/completions", `{"model":"m2","prompt":"once upon a time","max_tokens":4,"ignore_eos":true}`,
			"text_completion", 1, FinishLength, 4, true, len(tokenize("once upon a time"))},
		{"completion stream", "/v1/completions", `{"prompt":["once upon a time"],"max_tokens":4,"ignore_eos":true,"stream":true}`,
			"text_completion", 4, FinishLength, 4, false, len(tokenize("once upon a time"))},
		{"completion of token ids", "/v1/completions", `{"prompt":[1,2,3,4,5],"max_tokens":2,"ignore_eos":true}`,
			"text_completion", 1, FinishLength, 2, true, 5},
		{"max_tokens over the natural length stops", "/v1/completions", `{"prompt":"x","max_tokens":5000}`,
			"text_completion", 1, FinishStop, 0, true, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := call(t, s, c.path, c.body)
			require.Equal(t, http.StatusOK, res.status, res.errMsg)
			for _, o := range res.objects {
				assert.Equal(t, c.wantObject, o)
			}
			assert.Equal(t, c.wantFinish, res.finish)
			words := len(strings.Fields(res.text))
			if c.wantTokens > 0 {
				assert.Equal(t, c.wantTokens, words, "one word per token: %q", res.text)
			} else {
				p := s.Profile()
				assert.GreaterOrEqual(t, words, p.OutputTokens/2)
				assert.LessOrEqual(t, words, p.OutputTokens*3/2)
			}
			if c.wantPieces > 1 {
				assert.Equal(t, c.wantPieces, res.pieces, "one event per token")
			}
			if strings.Contains(c.path, "chat") && res.pieces > 1 {
				assert.Equal(t, "assistant", res.firstRol)
			}
			if c.wantUsage {
				require.Len(t, res.usage, 4)
				assert.Equal(t, c.prompt, res.usage[0], "prompt tokens")
				assert.Equal(t, words, res.usage[1], "completion tokens")
				assert.Equal(t, res.usage[0]+res.usage[1], res.usage[2])
			} else {
				assert.Nil(t, res.usage)
			}
		})
	}
}

// The answer is a function of the seed and the prompt: asked again, or
// of another server with the same seed, it is the same; another seed or
// another "seed" in the request changes it.
func TestSimHTTPDeterministic(t *testing.T) {
	a, b, other := startSim(t, Config{Seed: 11}), startSim(t, Config{Seed: 11}), startSim(t, Config{Seed: 12})
	body := `{"messages":[{"role":"user","content":"tell me"}],"max_tokens":12,"ignore_eos":true}`
	first := call(t, a, "/v1/chat/completions", body).text
	require.NotEmpty(t, first)
	assert.Equal(t, first, call(t, a, "/v1/chat/completions", body).text)
	assert.Equal(t, first, call(t, b, "/v1/chat/completions", body).text)
	assert.NotEqual(t, first, call(t, other, "/v1/chat/completions", body).text)
	seeded := strings.Replace(body, `"max_tokens"`, `"seed":5,"max_tokens"`, 1)
	assert.NotEqual(t, first, call(t, a, "/v1/chat/completions", seeded).text)
	stream := strings.Replace(body, `"max_tokens"`, `"stream":true,"max_tokens"`, 1)
	assert.Equal(t, first, call(t, a, "/v1/chat/completions", stream).text, "streamed or whole, one answer")
}

func TestSimHTTPErrors(t *testing.T) {
	s := startSim(t, Config{Models: []string{"m1"}, Profile: Profile{MaxModelLen: 64}})
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"not JSON", "POST", "/v1/chat/completions", "hello", 400, "JSON object"},
		{"broken JSON", "POST", "/v1/chat/completions", `{"messages":`, 400, "invalid JSON"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"m1"}`, 400, "messages"},
		{"prompt in chat", "POST", "/v1/chat/completions", `{"prompt":"x","messages":[{"role":"user","content":"x"}]}`, 400, "not \"prompt\""},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, 404, "The model `nope` does not exist."},
		{"n=2", "POST", "/v1/chat/completions", chatBody("x", `,"n":2`), 400, "n must be 1"},
		{"max_tokens 0", "POST", "/v1/chat/completions", chatBody("x", `,"max_tokens":0`), 400, "at least 1"},
		{"stream_options without stream", "POST", "/v1/chat/completions", chatBody("x", `,"stream_options":{"include_usage":true}`), 400, "stream=true"},
		{"too long", "POST", "/v1/completions", `{"prompt":"` + strings.Repeat("word ", 40) + `"}`, 400, "maximum context length is 64"},
		{"max_tokens beyond the context", "POST", "/v1/completions", `{"prompt":"hi","max_tokens":100}`, 400, "maximum context length"},
		{"empty prompt", "POST", "/v1/completions", `{"prompt":""}`, 400, "empty"},
		{"two prompts", "POST", "/v1/completions", `{"prompt":["a","b"]}`, 400, "one prompt per request"},
		{"image part", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "text parts only"},
		{"continue and generation prompt", "POST", "/v1/chat/completions",
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"continue_final_message":true}`, 400, "cannot set both"},
		{"continue a user message", "POST", "/v1/chat/completions",
			`{"messages":[{"role":"user","content":"x"}],"continue_final_message":true,"add_generation_prompt":false}`, 400, "assistant"},
		{"echo", "POST", "/v1/completions", `{"prompt":"x","echo":true}`, 400, "echo"},
		{"embeddings as base64", "POST", "/v1/embeddings", `{"input":"x","encoding_format":"base64"}`, 400, "float only"},
		{"unknown route", "POST", "/v1/nothing", `{}`, 404, "no route"},
		{"GET a POST route", "GET", "/v1/chat/completions", "", 405, "not allowed"},
		{"POST a GET route", "POST", "/v1/models", "", 405, "not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, s.URL()+c.path, strings.NewReader(c.body))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			assert.Equal(t, c.status, resp.StatusCode, "%s", data)
			if c.msg != "" {
				var a answerJSON
				require.NoError(t, json.Unmarshal(data, &a), "%s", data)
				require.NotNil(t, a.Error, "%s", data)
				assert.Contains(t, a.Error.Message, c.msg)
				assert.Equal(t, c.status, a.Error.Code)
			}
		})
	}
}

func TestSimHTTPModelsHealthEmbeddings(t *testing.T) {
	s := startSim(t, Config{Models: []string{"m1", "embed"}, Profile: A10})
	resp, err := http.Get(s.URL() + "/health")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	resp, err = http.Get(s.URL() + "/v1/models")
	require.NoError(t, err)
	var models struct {
		Object string `json:"object"`
		Data   []struct {
			ID          string `json:"id"`
			MaxModelLen int    `json:"max_model_len"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&models))
	resp.Body.Close()
	assert.Equal(t, "list", models.Object)
	require.Len(t, models.Data, 2)
	assert.Equal(t, "m1", models.Data[0].ID)
	assert.Equal(t, "embed", models.Data[1].ID)
	assert.Equal(t, A10.MaxModelLen, models.Data[0].MaxModelLen)

	resp = post(t, context.Background(), s.URL()+"/v1/embeddings", `{"model":"embed","input":["one text","another text"]}`)
	var emb struct {
		Data []struct {
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&emb))
	resp.Body.Close()
	require.Len(t, emb.Data, 2)
	assert.Len(t, emb.Data[0].Embedding, EmbeddingDims)
	assert.NotEqual(t, emb.Data[0].Embedding, emb.Data[1].Embedding)
	assert.Equal(t, len(tokenize("one text"))+len(tokenize("another text")), emb.Usage.PromptTokens)
}

// /metrics has vLLM's names and types, and reflects the engine at scrape
// time: counters move on, a repeated prompt counts prefix-cache hits.
func TestSimHTTPMetrics(t *testing.T) {
	s := startSim(t, Config{Models: []string{"m1"}})
	long := chatBody(strings.Repeat("a long shared system prompt ", 30), `,"max_tokens":4,"ignore_eos":true`)
	first := call(t, s, "/v1/chat/completions", long)
	require.Equal(t, http.StatusOK, first.status)
	before := metricstest.ScrapeURL(t, s.URL()+"/metrics")
	types := map[string]string{
		MetricRequestsRunning: "GAUGE", MetricRequestsWaiting: "GAUGE", MetricKVCacheUsage: "GAUGE", MetricCacheConfig: "GAUGE",
		MetricPrefixQueries: "COUNTER", MetricPrefixHits: "COUNTER", MetricPromptTokens: "COUNTER",
		MetricGenerationTokens: "COUNTER", MetricRequestSuccess: "COUNTER", MetricPreemptions: "COUNTER",
		MetricTTFT: "HISTOGRAM", MetricInterToken: "HISTOGRAM", MetricE2E: "HISTOGRAM",
		MetricQueueTime: "HISTOGRAM", MetricPrefillTime: "HISTOGRAM", MetricDecodeTime: "HISTOGRAM",
	}
	for name, typ := range types {
		assert.Equal(t, typ, before.Type(name), name)
	}
	model := metricstest.Labels{LabelModelName: "m1", LabelEngine: "0"}
	assert.Equal(t, 0.0, before.Value(MetricPrefixHits, model))
	assert.Equal(t, float64(first.usage[0]), before.Value(MetricPrefixQueries, model))
	assert.Equal(t, 4.0, before.Value(MetricGenerationTokens, model))
	assert.Equal(t, 1.0, before.Value(MetricRequestSuccess, metricstest.Labels{LabelFinishedReason: FinishLength}))
	assert.Equal(t, 1.0, before.Value(MetricTTFT, model), "one TTFT observed")

	second := call(t, s, "/v1/chat/completions", long)
	require.Equal(t, http.StatusOK, second.status)
	assert.Equal(t, first.text, second.text)
	assert.Greater(t, second.usage[3], 0, "usage reports cached prompt tokens")
	after := metricstest.ScrapeURL(t, s.URL()+"/metrics")
	assert.Equal(t, float64(second.usage[3]), after.Value(MetricPrefixHits, model), "the repeat hit the prefix cache")
	for _, name := range []string{MetricPrefixQueries, MetricPromptTokens, MetricGenerationTokens, MetricRequestSuccess, MetricTTFT, MetricE2E} {
		assert.Greater(t, after.Value(name, model), before.Value(name, model), "%s moves on", name)
	}
	assert.Equal(t, 0.0, after.Value(MetricRequestsRunning, model))
	assert.Equal(t, 0.0, after.Value(MetricKVCacheUsage, model), "nothing running holds blocks")
	// simulated TTFTs: one step each, prefilling the whole prompt, then
	// only its uncached tail
	ttft := after.Series(MetricTTFT)
	require.Len(t, ttft, 1)
	p := s.Profile()
	want := p.stepTime(0, first.usage[0]) + p.stepTime(0, second.usage[0]-second.usage[3])
	assert.InDelta(t, want.Seconds(), ttft[0].Sum, 1e-9)
}

// A client that goes away leaves the batch: a request waiting for its
// slot runs at once. The waiting one is visible in num_requests_waiting.
func TestSimHTTPCancelFreesSlot(t *testing.T) {
	// one sequence at a time, 5 ms a token in real time
	s := startSim(t, Config{TimeScale: 1, Models: []string{"m1"}, Profile: Profile{MaxNumSeqs: 1, DecodeBase: 5 * time.Millisecond, MaxBatchedTokens: 1024}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := post(t, ctx, s.URL()+"/v1/chat/completions", chatBody("a long one", `,"max_tokens":4000,"ignore_eos":true,"stream":true`))
	defer long.Body.Close()
	require.Equal(t, http.StatusOK, long.StatusCode)
	r := openai.NewSSEReader(long.Body)
	for range 3 { // the role chunk, then tokens: it runs
		_, err := r.Next()
		require.NoError(t, err)
	}
	done := make(chan answerJSON, 1)
	go func() { // no require here: not the test's goroutine
		var a answerJSON
		resp, err := http.Post(s.URL()+"/v1/chat/completions", "application/json",
			strings.NewReader(chatBody("a short one", `,"max_tokens":3,"ignore_eos":true`)))
		if assert.NoError(t, err) {
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.NoError(t, json.NewDecoder(resp.Body).Decode(&a))
			resp.Body.Close()
		}
		done <- a
	}()
	model := metricstest.Labels{LabelModelName: "m1"}
	natsembed.Eventually(t, 5*time.Second, func() error {
		m := metricstest.ScrapeURL(t, s.URL()+"/metrics")
		return natsembed.Check(m.Value(MetricRequestsWaiting, model) == 1 && m.Value(MetricRequestsRunning, model) == 1,
			"waiting %v running %v", m.Value(MetricRequestsWaiting, model), m.Value(MetricRequestsRunning, model))
	})
	select {
	case <-done:
		t.Fatal("the short request ran while the long one held the only slot")
	case <-time.After(50 * time.Millisecond):
	}
	cancel() // the long one's client goes away
	select {
	case a := <-done:
		require.Len(t, a.Choices, 1)
		require.NotNil(t, a.Choices[0].Message)
		assert.Len(t, strings.Fields(a.Choices[0].Message.Content), 3)
	case <-time.After(5 * time.Second):
		t.Fatal("the short request never ran after the long one was cancelled")
	}
	m := metricstest.ScrapeURL(t, s.URL()+"/metrics")
	assert.Equal(t, 1.0, m.Value(MetricRequestSuccess, metricstest.Labels{LabelFinishedReason: FinishAbort}))
	assert.Equal(t, 1.0, m.Value(MetricRequestSuccess, metricstest.Labels{LabelFinishedReason: FinishLength}))
}

// continue_final_message continues the last assistant message: its
// prompt is the conversation with that message left open, and a node
// agent's OpenAI backend continues a lost stream through it.
func TestSimHTTPContinueFinalMessage(t *testing.T) {
	s := startSim(t, Config{Models: []string{"m1"}})
	body := `{"model":"m1","messages":[{"role":"user","content":"count"},{"role":"assistant","content":"one two "}],` +
		`"continue_final_message":true,"add_generation_prompt":false,"max_tokens":3,"ignore_eos":true}`
	res := call(t, s, "/v1/chat/completions", body)
	require.Equal(t, http.StatusOK, res.status, res.errMsg)
	assert.Equal(t, len(tokenize("<|user|>\ncount<|end|>\n<|assistant|>\none two ")), res.usage[0])
	assert.Len(t, strings.Fields(res.text), 3)

	b, err := openai.New(openai.Config{BaseURL: s.URL(), Continue: true})
	require.NoError(t, err)
	var got bytes.Buffer
	out, err := b.Generate(context.Background(), backendCall(`{"messages":[{"role":"user","content":"count"}],"max_tokens":3,"ignore_eos":true}`, "one two "),
		func(p []byte) error { got.Write(p); return nil })
	require.NoError(t, err)
	assert.Equal(t, res.text, got.String(), "the backend's continuation is the same request")
	assert.Equal(t, 3, out.Tokens)
}

func TestSimHTTPStopCutsStreams(t *testing.T) {
	s := startSim(t, Config{TimeScale: 1, Profile: Profile{DecodeBase: 5 * time.Millisecond}})
	resp := post(t, context.Background(), s.URL()+"/v1/completions", `{"prompt":"x","max_tokens":5000,"ignore_eos":true,"stream":true}`)
	defer resp.Body.Close()
	r := openai.NewSSEReader(resp.Body)
	_, err := r.Next()
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, s.Stop())
	assert.Less(t, time.Since(start), shutdownGrace+2*time.Second)
	for {
		if _, err := r.Next(); err != nil {
			break // cut: the stream ends without [DONE]
		}
	}
	require.NoError(t, s.Stop(), "Stop twice")
}
