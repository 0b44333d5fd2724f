package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Out-of-band bodies (DESIGN §3.7) through the real router and node
// agents: the SDK uploads, the router passes the headers on, the node
// fetches; a large answer comes back the same way; nothing stays behind.

// blobMesh is a mesh whose fed_blobs was made with TTL ttl (0: the
// default) before any service started, and a view of the blob stream.
type blobMesh struct {
	*env
	stream jetstream.Stream
}

func startBlobMesh(t *testing.T, ttl time.Duration, nodes ...nodeagent.Config) *blobMesh {
	t.Helper()
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := buckets.EnsureConn(ctx, nc, buckets.Options{BlobTTL: ttl})
	require.NoError(t, err)
	for i := range nodes {
		nodes[i].HeartbeatInterval = hbInterval
	}
	mesh := startMesh(t, devmesh.Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval },
		Health: func(c *health.Config) {
			c.HeartbeatInterval = hbInterval
			c.CheckInterval = time.Second
			c.ProbeTimeout = 200 * time.Millisecond
		}})
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	e := &env{t: t, mesh: mesh, nc: nc, c: c, kv: natsembed.BucketsForTest(t, nc)}
	for _, n := range nodes {
		e.waitRoutable(n.NodeID, n.Models[0].Capabilities[0])
	}
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+buckets.Blobs)
	require.NoError(t, err)
	return &blobMesh{env: e, stream: stream}
}

// msgs is what fed_blobs holds: 0 when every blob was deleted (not even a
// delete marker) or expired.
func (m *blobMesh) msgs() uint64 {
	m.t.Helper()
	info, err := m.stream.Info(context.Background())
	require.NoError(m.t, err)
	return info.State.Msgs
}

func (m *blobMesh) waitEmpty(within time.Duration) {
	m.t.Helper()
	natsembed.Eventually(m.t, within, func() error {
		return natsembed.Check(m.msgs() == 0, "%d messages left in fed_blobs", m.msgs())
	})
}

var mediaModels = []record.Model{
	{ModelID: "whisper", Capabilities: []string{wire.CapTranscribe}},
	{ModelID: "tts", Capabilities: []string{wire.CapSynthesize}},
}

// ttsSamples makes a synthesize answer 8 MiB and 44 bytes of WAV.
const ttsSamples = 4 << 20

func mediaConfig(sc synthetic.Config) synthetic.Config {
	sc.Tokens = 4
	sc.TokensByModel = map[string]int{"tts": ttsSamples}
	return sc
}

// expected is what a synthetic node configured with sc answers to call:
// the synthetic backend's documented, deterministic output.
func expected(t *testing.T, sc synthetic.Config, call backend.Call) []byte {
	t.Helper()
	var out []byte
	_, err := synthetic.New(sc).Generate(context.Background(), call, func(b []byte) error {
		out = append(out, b...)
		return nil
	})
	require.NoError(t, err)
	return out
}

func randomBody(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// An 8 MB request body and an 8 MB answer make the round trip through a
// real mesh, whole and streamed, byte for byte; the bucket is empty after
// each request.
func TestBlobRoundTrip8MB(t *testing.T) {
	sc := mediaConfig(synthetic.Config{})
	m := startBlobMesh(t, 0, node("media", "us", wire.PrivacyInternal, sc, mediaModels...))

	body := randomBody(t, 8<<20)
	resp, err := m.c.Infer(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapTranscribe, Body: body})
	require.NoError(t, err)
	want := expected(t, sc, backend.Call{Capability: wire.CapTranscribe, Model: "whisper", Body: body})
	assert.Equal(t, string(want), string(resp.Body), "the node transcribed exactly the bytes sent (its answer hashes them)")
	m.waitEmpty(time.Second)

	audio := expected(t, sc, backend.Call{Capability: wire.CapSynthesize, Model: "tts", Body: []byte("read this")})
	require.Len(t, audio, 2*ttsSamples+44)
	resp, err = m.c.Infer(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapSynthesize, Body: []byte("read this")})
	require.NoError(t, err)
	assert.True(t, bytes.Equal(audio, resp.Body), "8 MB answer whole: %d bytes", len(resp.Body))
	assert.Equal(t, "audio/wav", resp.Header.Get(wire.HdrContentType))
	m.waitEmpty(time.Second)

	var file bytes.Buffer
	resp, err = m.c.InferTo(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapSynthesize, Body: []byte("read this")}, &file)
	require.NoError(t, err)
	assert.EqualValues(t, len(audio), resp.Size)
	assert.True(t, bytes.Equal(audio, file.Bytes()))
	m.waitEmpty(time.Second)

	st, err := m.c.InferStream(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapSynthesize, Body: []byte("read this")})
	require.NoError(t, err)
	var streamed []byte
	chunks := 0
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		streamed = append(streamed, ch.Data...)
		chunks++
	}
	st.Close()
	assert.True(t, bytes.Equal(audio, streamed), "8 MB answer streamed")
	assert.Greater(t, chunks, 8, "in pieces that each fit a message")

	// a stream whose request body is 8 MB
	st, err = m.c.InferStream(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapTranscribe, Body: body})
	require.NoError(t, err)
	var text []byte
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		text = append(text, ch.Data...)
	}
	st.Close()
	assert.Equal(t, string(want), string(text))
	m.waitEmpty(time.Second)

	// both at once: an 8 MB body whose answer is 8 MB
	resp, err = m.c.Infer(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapSynthesize, Body: body})
	require.NoError(t, err)
	assert.True(t, bytes.Equal(expected(t, sc, backend.Call{Capability: wire.CapSynthesize, Model: "tts", Body: body}), resp.Body))
	m.waitEmpty(time.Second)
	assert.Zero(t, m.c.BlobLeaks())
	assert.Zero(t, m.c.LateMessages())
}

// A 20 MB prompt and a 10 MB answer (issue 15's test): the node gets every
// byte of the prompt and the client every byte of the answer the synthetic
// backend documents for it; nothing stays in fed_blobs.
func TestBlobPrompt20MBAnswer10MB(t *testing.T) {
	sc := synthetic.Config{Tokens: 10 << 10, TokenBytes: 1 << 10} // 10 MiB, whole
	m := startBlobMesh(t, 0, node("big", "us", wire.PrivacyInternal, sc))
	prompt := randomBody(t, 20<<20)
	resp, err := m.c.Infer(ctxFor(t, 60*time.Second), client.Request{Capability: wire.CapGenerate, Body: prompt})
	require.NoError(t, err)
	want := expected(t, sc, backend.Call{Capability: wire.CapGenerate, Model: "m1", Body: prompt})
	require.Len(t, want, 10<<20)
	assert.True(t, bytes.Equal(want, resp.Body), "10 MB answer: %d bytes", len(resp.Body))
	m.waitEmpty(2 * time.Second)
}

// countingReader yields zeros and counts what was read.
type countingReader struct {
	mu sync.Mutex
	n  int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n += int64(len(p))
	clear(p)
	return len(p), nil
}

// The 64 MiB cap: a typed 413 before anything is uploaded, the body not
// even read; a body of exactly 64 MiB is carried.
func TestBlobCap64MiB(t *testing.T) {
	sc := mediaConfig(synthetic.Config{})
	m := startBlobMesh(t, 0, node("media", "us", wire.PrivacyInternal, sc, mediaModels...))
	for _, size := range []int64{blobs.DefaultMaxBytes + 1, 100 << 20} { // just over, and the 100 MB
		r := &countingReader{}
		_, err := m.c.Infer(ctxFor(t, 10*time.Second), client.Request{Capability: wire.CapTranscribe,
			BodyReader: r, BodySize: size})
		var tl *client.BodyTooLargeError
		require.ErrorAs(t, err, &tl, "%d bytes", size)
		assert.Equal(t, wire.CodeTooLarge, wire.CodeOf(err))
		assert.EqualValues(t, 64<<20, tl.Limit)
		assert.Zero(t, r.n, "%d bytes: nothing read, nothing uploaded", size)
		assert.Zero(t, m.msgs())
	}

	resp, err := m.c.Infer(ctxFor(t, 60*time.Second), client.Request{Capability: wire.CapTranscribe,
		BodyReader: io.LimitReader(&countingReader{}, blobs.DefaultMaxBytes), BodySize: blobs.DefaultMaxBytes})
	require.NoError(t, err, "exactly the cap is carried")
	assert.NotEmpty(t, resp.Body)
	m.waitEmpty(time.Second)
}

// Whatever ends a request (its answer, an error, the caller's cancel), its
// blobs are deleted right after (the SDK deletes in the background).
func TestBlobCleanup(t *testing.T) {
	okCfg := mediaConfig(synthetic.Config{})
	failing := mediaConfig(synthetic.Config{FailureRate: 1})
	slow := mediaConfig(synthetic.Config{TTFT: 5 * time.Second})
	m := startBlobMesh(t, 0,
		node("ok", "us", wire.PrivacyInternal, okCfg, record.Model{ModelID: "ok", Capabilities: []string{wire.CapTranscribe}}),
		node("failing", "us", wire.PrivacyInternal, failing, record.Model{ModelID: "bad", Capabilities: []string{wire.CapTranscribe}}),
		node("slow", "us", wire.PrivacyInternal, slow, record.Model{ModelID: "slow", Capabilities: []string{wire.CapTranscribe}}))
	body := randomBody(t, 8<<20)
	req := func(model string) client.Request {
		return client.Request{Capability: wire.CapTranscribe, Model: model, Body: body}
	}
	_, err := m.c.Infer(ctxFor(t, 20*time.Second), req("ok"))
	require.NoError(t, err)
	m.waitEmpty(2 * time.Second) // success

	_, err = m.c.Infer(ctxFor(t, 20*time.Second), req("bad"))
	assert.Equal(t, wire.CodeInternal, codeOf(err))
	m.waitEmpty(2 * time.Second) // error

	outcomes := make(chan record.Outcome, 4)
	sub, err := m.nc.Subscribe(subject.Default.Outcome("slow"), func(msg *nats.Msg) {
		if o, err := record.DecodeOutcome(msg.Subject, msg.Data); err == nil {
			outcomes <- o
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel) // the node is in its 5 s TTFT by then
	_, err = m.c.Infer(ctx, req("slow"))
	require.ErrorIs(t, err, context.Canceled)
	m.waitEmpty(2 * time.Second) // cancel: the body is gone right after the call returns
	select {
	case o := <-outcomes:
		assert.Equal(t, wire.CodeCanceled, o.Code, "the node stopped on the cancel")
	case <-time.After(5 * time.Second):
		t.Fatal("the slow node never finished the cancelled request")
	}

	// cancelled while the body is still being uploaded
	ctx, cancel = context.WithCancel(context.Background())
	r := &cancelAfter{left: 8, cancel: cancel}
	_, err = m.c.Infer(ctx, client.Request{Capability: wire.CapTranscribe, Model: "ok", BodyReader: r, BodySize: 32 << 20})
	require.ErrorIs(t, err, context.Canceled)
	m.waitEmpty(2 * time.Second)
	assert.Zero(t, m.c.BlobLeaks())
}

// cancelAfter yields zeros and cancels its request after a few reads.
type cancelAfter struct {
	left   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.left--; c.left == 0 {
		c.cancel()
	}
	clear(p)
	return len(p), nil
}

// A node killed while it downloads a request's body: the router hands the
// request to another node, which finds the blob still there; the client
// gets exactly one final, and within the (short) TTL nothing is left.
func TestBlobNodeKilledMidDownload(t *testing.T) {
	sc := mediaConfig(synthetic.Config{})
	m := startBlobMesh(t, 3*time.Second,
		node("a", "us", wire.PrivacyInternal, sc, mediaModels...),
		node("b", "us", wire.PrivacyInternal, sc, mediaModels...))

	// Which node took the dispatch, and when its download starts (its
	// consumer on the blob stream): then it dies.
	var mu sync.Mutex
	first := ""
	disp, err := m.nc.Subscribe(subject.Default.NodeInferAt("*", "*"), func(msg *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if first == "" {
			first = strings.Split(msg.Subject, ".")[2]
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = disp.Unsubscribe() })
	killed := make(chan string, 1)
	var once sync.Once
	api, err := m.nc.Subscribe("$JS.API.CONSUMER.CREATE.OBJ_"+buckets.Blobs+".>", func(*nats.Msg) {
		once.Do(func() {
			go func() {
				victim := ""
				for deadline := time.Now().Add(time.Second); victim == "" && time.Now().Before(deadline); {
					mu.Lock() // the dispatch is seen first, on another subscription's goroutine
					victim = first
					mu.Unlock()
					time.Sleep(time.Millisecond)
				}
				_ = m.mesh.KillNode(victim)
				killed <- victim
			}()
		})
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = api.Unsubscribe() })
	require.NoError(t, m.nc.Flush())

	var finals []string
	c, err := client.New(m.nc, client.WithDropped(func(d client.Dropped) {
		if d.Final {
			mu.Lock()
			finals = append(finals, "dropped from "+d.Node)
			mu.Unlock()
		}
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	body := randomBody(t, 32<<20)
	resp, err := c.Infer(ctxFor(t, 30*time.Second), client.Request{Capability: wire.CapTranscribe, Body: body})
	require.NoError(t, err)
	victim := <-killed
	require.NotEmpty(t, victim)
	assert.NotEqual(t, victim, resp.Node, "answered by the node that took over")
	want := expected(t, sc, backend.Call{Capability: wire.CapTranscribe, Model: "whisper", Body: body})
	assert.Equal(t, string(want), string(resp.Body))
	assert.EqualValues(t, 1, c.Resumed(), "taken over from the dead node")
	time.Sleep(500 * time.Millisecond) // anything late would be in by now
	mu.Lock()
	assert.Empty(t, finals, "exactly one final")
	mu.Unlock()
	assert.Zero(t, c.Duplicates())
	// (the dead node's ephemeral consumer holds no data; the server drops
	// it after its inactivity threshold, about 30 s)
	m.waitEmpty(3*time.Second + 2*time.Second)
}

// A plain NATS client (no SDK): small bodies work as ever; a body over the
// limit is a 413 naming the limit and the SDK, and so is an answer too
// large for one message.
func TestBlobRawNATSClient(t *testing.T) {
	sc := mediaConfig(synthetic.Config{})
	m := startBlobMesh(t, 0, node("media", "us", wire.PrivacyInternal, sc, mediaModels...))
	raw := func(capability string, body []byte) *nats.Msg {
		msg := nats.NewMsg(subject.Default.Infer(capability))
		msg.Data = body
		resp, err := m.nc.RequestMsg(msg, 10*time.Second)
		require.NoError(t, err)
		return resp
	}
	resp := raw(wire.CapTranscribe, []byte("short audio"))
	require.Nil(t, wire.ErrorFromHeader(resp.Header))
	assert.Equal(t, string(expected(t, sc, backend.Call{Capability: wire.CapTranscribe, Model: "whisper", Body: []byte("short audio")})), string(resp.Data))

	limit := m.nc.MaxPayload()
	resp = raw(wire.CapTranscribe, make([]byte, limit-64))
	we := wire.ErrorFromHeader(resp.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeTooLarge, we.Code)
	assert.Contains(t, we.Description, "max_payload "+strconv.FormatInt(limit, 10))
	assert.Contains(t, we.Description, "SDK")

	resp = raw(wire.CapSynthesize, []byte("read this"))
	we = wire.ErrorFromHeader(resp.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeTooLarge, we.Code)
	assert.Contains(t, we.Description, fmt.Sprintf("does not fit the NATS max_payload of %d bytes", limit))
	assert.Contains(t, we.Description, "SDK")
	assert.Zero(t, m.msgs(), "nothing went to fed_blobs for a client that does not read it")

	// the same client, saying it reads blobs, gets the answer's name
	msg := nats.NewMsg(subject.Default.Infer(wire.CapSynthesize))
	msg.Data = []byte("read this")
	msg.Header.Set(blobs.HdrAccept, "true")
	resp, err := m.nc.RequestMsg(msg, 10*time.Second)
	require.NoError(t, err)
	ref, ok, err := blobs.AnswerRef(resp.Header)
	require.NoError(t, err)
	require.True(t, ok)
	assert.EqualValues(t, 2*ttsSamples+44, ref.Size)
}

// The demo mesh answers every capability, a large transcription upload
// included.
func TestDemoServesEveryCapability(t *testing.T) {
	s := natsembed.StartForTest(t)
	nodes := devmesh.DemoNodes()
	for i := range nodes {
		nodes[i].HeartbeatInterval = hbInterval
	}
	mesh := startMesh(t, devmesh.Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval },
		Health:  func(c *health.Config) { c.HeartbeatInterval = hbInterval }})
	_ = mesh
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	e := &env{t: t, nc: nc, c: c}
	for _, n := range nodes {
		for _, md := range n.Models {
			e.waitRoutable(n.NodeID, md.Capabilities[0])
		}
	}
	for _, tc := range []struct {
		capability string
		body       []byte
		check      func(t *testing.T, b []byte)
	}{
		{wire.CapGenerate, []byte("hello"), nil},
		{wire.CapCode, []byte("def f():"), nil},
		{wire.CapEmbed, []byte("embed me"), func(t *testing.T, b []byte) { assert.Contains(t, string(b), `"embedding"`) }},
		{wire.CapTranscribe, randomBody(t, 5<<20), func(t *testing.T, b []byte) { assert.Contains(t, string(b), `"text"`) }},
		{wire.CapSynthesize, []byte(`{"input":"hello","voice":"alloy"}`), func(t *testing.T, b []byte) {
			assert.True(t, bytes.HasPrefix(b, []byte("RIFF")))
			assert.Len(t, b, 44+2*16000, "one second of 16 kHz audio")
		}},
		{wire.CapImagegen, []byte(`{"prompt":"a lighthouse"}`), func(t *testing.T, b []byte) { assert.Contains(t, string(b), `"b64_json"`) }},
	} {
		t.Run(tc.capability, func(t *testing.T) {
			resp, err := c.Infer(ctxFor(t, 10*time.Second), client.Request{Capability: tc.capability, Body: tc.body})
			require.NoError(t, err)
			assert.NotEmpty(t, resp.Body)
			if tc.check != nil {
				tc.check(t, resp.Body)
			}
		})
	}
}
