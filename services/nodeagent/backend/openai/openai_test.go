package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const secret = "sk-test-secret-123"

// seen is what the fake server received.
type seen struct {
	path, auth, contentType string
	body                    map[string]any
	form                    map[string]string
	file                    []byte
}

type fake struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	last   seen
	handle func(w http.ResponseWriter, r *http.Request)
}

func newFake(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) *fake {
	f := &fake{t: t, handle: handle}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{path: r.URL.Path, auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type")}
		if strings.HasPrefix(s.contentType, "multipart/") {
			if err := r.ParseMultipartForm(1 << 20); err == nil {
				s.form = map[string]string{}
				for k, v := range r.MultipartForm.Value {
					s.form[k] = v[0]
				}
				if fh := r.MultipartForm.File["file"]; len(fh) > 0 {
					fd, _ := fh[0].Open()
					s.file, _ = io.ReadAll(fd)
					s.form["filename"] = fh[0].Filename
				}
			}
		} else {
			_ = json.NewDecoder(r.Body).Decode(&s.body)
		}
		f.mu.Lock()
		f.last = s
		f.mu.Unlock()
		f.handle(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) seen() seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *fake) backend(mod ...func(*Config)) *Backend {
	cfg := Config{BaseURL: f.srv.URL, APIKey: secret, ModelNames: map[string]string{"llama": "meta-llama/Llama-3-8B"},
		StallTimeout: 2 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	b, err := New(cfg)
	require.NoError(f.t, err)
	return b
}

func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
}

func delta(w http.ResponseWriter, s string) {
	b, _ := json.Marshal(map[string]any{"object": "chat.completion.chunk",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]string{"content": s}, "finish_reason": nil}}})
	fmt.Fprintf(w, "data: %s\n\n", b)
	w.(http.Flusher).Flush()
}

func finish(w http.ResponseWriter, usage bool) {
	fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n")
	if usage {
		fmt.Fprint(w, `data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":42,"total_tokens":45}}`+"\n\n")
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	w.(http.Flusher).Flush()
}

type collected struct {
	mu     sync.Mutex
	chunks []string
	first  chan struct{}
	once   sync.Once
}

func newCollected() *collected { return &collected{first: make(chan struct{})} }

func (c *collected) emit(b []byte) error {
	c.mu.Lock()
	c.chunks = append(c.chunks, string(b))
	c.mu.Unlock()
	c.once.Do(func() { close(c.first) })
	return nil
}

func (c *collected) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.chunks...)
}

func gen(b *Backend, ctx context.Context, req backend.Call, c *collected) (backend.Result, error) {
	if req.Model == "" {
		req.Model = "llama"
	}
	if req.Capability == "" {
		req.Capability = wire.CapGenerate
	}
	return b.Generate(ctx, req, c.emit)
}

func TestStreamedChatArrivesInOrderAsItIsProduced(t *testing.T) {
	release := make(chan struct{})
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		delta(w, "Hel")
		<-release // the rest only after the client saw the first delta
		for _, s := range []string{"lo", ",", " world"} {
			delta(w, s)
		}
		finish(w, true)
	})
	c := newCollected()
	done := make(chan struct{})
	var res backend.Result
	var err error
	go func() {
		defer close(done)
		res, err = gen(f.backend(), context.Background(), backend.Call{Body: []byte("say hi"), Stream: true}, c)
	}()
	select {
	case <-c.first:
	case <-time.After(2 * time.Second):
		t.Fatal("first delta was not forwarded before the stream ended (buffered)")
	}
	close(release)
	<-done
	require.NoError(t, err)
	assert.Equal(t, []string{"Hel", "lo", ",", " world"}, c.all())
	assert.Equal(t, 42, res.Tokens, "usage wins over counting deltas")
	s := f.seen()
	assert.Equal(t, "/v1/chat/completions", s.path)
	assert.Equal(t, "Bearer "+secret, s.auth)
	assert.Equal(t, "meta-llama/Llama-3-8B", s.body["model"], "fedmesh id mapped to the server's name")
	assert.Equal(t, true, s.body["stream"])
	assert.Equal(t, []any{map[string]any{"role": "user", "content": "say hi"}}, s.body["messages"])
}

func TestWholeAnswers(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/chat/completions":
			fmt.Fprint(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"the whole answer"},"finish_reason":"stop"}],"usage":{"completion_tokens":3}}`)
		case "/v1/completions":
			fmt.Fprint(w, `{"choices":[{"index":0,"text":"completed text here","finish_reason":"stop"}]}`)
		case "/v1/embeddings":
			fmt.Fprint(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":2,"total_tokens":2}}`)
		case "/v1/images/generations":
			fmt.Fprint(w, `{"created":1,"data":[{"b64_json":"AAAA"}]}`)
		case "/v1/audio/transcriptions":
			fmt.Fprint(w, `{"text":"hello there"}`)
		case "/v1/audio/speech":
			w.Header().Set("Content-Type", "audio/mpeg")
			_, _ = w.Write([]byte("ID3-fake-mp3"))
		default:
			http.NotFound(w, r)
		}
	})
	b := f.backend()
	cases := []struct {
		name       string
		req        backend.Call
		completion bool
		path       string
		out        string
		tokens     int
		ctype      string
		check      func(t *testing.T, s seen)
	}{
		{name: "chat passthrough", req: backend.Call{Body: []byte(`{"model":"whatever","messages":[{"role":"user","content":"q"}],"temperature":0.2,"stream":true,"stream_options":{"include_usage":true}}`)},
			path: "/v1/chat/completions", out: "the whole answer", tokens: 3, check: func(t *testing.T, s seen) {
				assert.Equal(t, 0.2, s.body["temperature"], "other fields pass through")
				assert.Equal(t, false, s.body["stream"], "a whole answer is asked for whole, whatever the body says")
				assert.NotContains(t, s.body, "stream_options", "vLLM rejects stream_options without stream")
				assert.Equal(t, "meta-llama/Llama-3-8B", s.body["model"])
			}},
		{name: "prompt body", req: backend.Call{Capability: wire.CapCode, Body: []byte(`{"prompt":"def f("}`)},
			path: "/v1/completions", out: "completed text here", tokens: 3},
		{name: "plain text to completions", completion: true, req: backend.Call{Body: []byte("once upon")},
			path: "/v1/completions", out: "completed text here", tokens: 3, check: func(t *testing.T, s seen) {
				assert.Equal(t, "once upon", s.body["prompt"])
			}},
		{name: "embed text", req: backend.Call{Capability: wire.CapEmbed, Model: "bge", Body: []byte("vector me")},
			path: "/v1/embeddings", tokens: 2, out: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":2,"total_tokens":2}}`,
			check: func(t *testing.T, s seen) {
				assert.Equal(t, "vector me", s.body["input"])
				assert.Equal(t, "bge", s.body["model"], "unmapped ids are sent as they are")
			}},
		{name: "imagegen", req: backend.Call{Capability: wire.CapImagegen, Body: []byte("a cat")},
			path: "/v1/images/generations", out: `{"created":1,"data":[{"b64_json":"AAAA"}]}`, check: func(t *testing.T, s seen) {
				assert.Equal(t, "a cat", s.body["prompt"])
			}},
		{name: "speech", req: backend.Call{Capability: wire.CapSynthesize, Body: []byte("read this")},
			path: "/v1/audio/speech", out: "ID3-fake-mp3", ctype: "audio/mpeg", check: func(t *testing.T, s seen) {
				assert.Equal(t, "read this", s.body["input"])
				assert.Equal(t, DefaultVoice, s.body["voice"])
			}},
		{name: "transcribe", req: backend.Call{Capability: wire.CapTranscribe, Body: []byte("RIFF...."),
			Params: []byte(`{"language":"de","filename":"a.wav","response_format":"json"}`)},
			path: "/v1/audio/transcriptions", out: `{"text":"hello there"}`, check: func(t *testing.T, s seen) {
				assert.Equal(t, "RIFF....", string(s.file))
				assert.Equal(t, "a.wav", s.form["filename"])
				assert.Equal(t, "de", s.form["language"])
				assert.Equal(t, "meta-llama/Llama-3-8B", s.form["model"])
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bb := b
			if tc.completion {
				bb = f.backend(func(c *Config) { c.Completions = true })
			}
			c := newCollected()
			res, err := gen(bb, context.Background(), tc.req, c)
			require.NoError(t, err)
			assert.Equal(t, tc.out, strings.Join(c.all(), ""))
			assert.Equal(t, tc.tokens, res.Tokens)
			assert.Equal(t, tc.ctype, res.ContentType)
			s := f.seen()
			assert.Equal(t, tc.path, s.path)
			if tc.check != nil {
				tc.check(t, s)
			}
		})
	}
}

func TestFailuresEndInOneClearError(t *testing.T) {
	cases := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request)
		code   int
		says   string
	}{
		{"500 json error", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			fmt.Fprint(w, `{"error":{"message":"CUDA out of memory","type":"server_error"}}`)
		}, wire.CodeInternal, "CUDA out of memory"},
		{"429", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":"queue full"}`)
		}, wire.CodeOverloaded, "queue full"},
		{"404 model", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(404)
			fmt.Fprint(w, `{"message":"model not found"}`)
		}, wire.CodeNotFound, "model not found"},
		{"401 is the node's fault", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
			fmt.Fprint(w, "unauthorized")
		}, wire.CodeInternal, "401"},
		{"error mid-stream", func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			delta(w, "partial")
			fmt.Fprint(w, `data: {"error":{"message":"engine crashed","code":500}}`+"\n\n")
		}, wire.CodeInternal, "engine crashed"},
		{"connection dropped mid-stream", func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			delta(w, "partial")
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = buf.Flush()
				_ = conn.Close()
			}
		}, wire.CodeInternal, "stream"},
		{"stream ends without DONE", func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			delta(w, "partial")
		}, wire.CodeInternal, "[DONE]"},
		{"garbage event", func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			fmt.Fprint(w, "data: {not json\n\n")
		}, wire.CodeInternal, "not JSON"},
		{"stalls mid-stream", func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			delta(w, "partial")
			<-r.Context().Done()
		}, wire.CodeTimeout, "stalled"},
		{"stalls before headers", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}, wire.CodeTimeout, "no answer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.handle)
			b := f.backend(func(c *Config) { c.StallTimeout = 150 * time.Millisecond })
			_, err := gen(b, context.Background(), backend.Call{Body: []byte("x"), Stream: true}, newCollected())
			require.Error(t, err)
			var we *wire.Error
			require.True(t, errors.As(err, &we), "a *wire.Error, got %T %v", err, err)
			assert.Equal(t, tc.code, we.Code, we.Description)
			assert.Contains(t, we.Description, tc.says)
			assert.NotContains(t, err.Error(), secret, "the API key never appears in an error")
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {})
	b := f.backend()
	f.srv.Close()
	_, err := gen(b, context.Background(), backend.Call{Body: []byte("x")}, newCollected())
	var we *wire.Error
	require.True(t, errors.As(err, &we))
	assert.Equal(t, wire.CodeNoCapacity, we.Code)
	assert.NotContains(t, err.Error(), secret)
}

func TestCancelStopsTheHTTPRequest(t *testing.T) {
	gone := make(chan time.Time, 1)
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		delta(w, "tok")
		<-r.Context().Done()
		gone <- time.Now()
	})
	ctx, cancel := context.WithCancel(context.Background())
	c := newCollected()
	done := make(chan error, 1)
	go func() {
		_, err := gen(f.backend(), ctx, backend.Call{Body: []byte("x"), Stream: true}, c)
		done <- err
	}()
	<-c.first
	t0 := time.Now()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(2 * time.Second):
		t.Fatal("Generate did not return after cancel")
	}
	select {
	case at := <-gone:
		assert.Less(t, at.Sub(t0), 500*time.Millisecond, "the server saw the request cancelled")
	case <-time.After(2 * time.Second):
		t.Fatal("the HTTP request was not cancelled")
	}
}

func TestBadInput(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { t.Error("no request must reach the server") })
	b := f.backend()
	for _, req := range []backend.Call{
		{Body: []byte(`{"messages": [`)},
		{Body: []byte(`{"temperature": 1}`)},
		{Capability: wire.CapTranscribe, Params: []byte(`{nope`)},
		{Capability: "custom.ocr"},
	} {
		_, err := gen(b, context.Background(), req, newCollected())
		var we *wire.Error
		require.True(t, errors.As(err, &we), "%v", err)
		assert.Contains(t, []int{wire.CodeBadRequest, wire.CodeNotFound}, we.Code)
	}
	_, err := New(Config{BaseURL: "ftp://x"})
	require.ErrorContains(t, err, "backend_url")
	for _, u := range []string{"http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"} {
		b, err := New(Config{BaseURL: u})
		require.NoError(t, err)
		assert.Equal(t, "http://h:1/v1", b.base)
	}
	assert.Equal(t, "k", APIKeyFromEnv(func(string) (string, bool) { return " k\n", true }, ""))
}

// A non-streamed endpoint answers only when done: a slow image or embedding
// is not a stall (only the deadline bounds it).
func TestSlowWholeAnswerIsNotAStall(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"created":1,"data":[]}`)
	})
	b := f.backend(func(c *Config) { c.StallTimeout = 100 * time.Millisecond })
	c := newCollected()
	_, err := gen(b, context.Background(), backend.Call{Capability: wire.CapImagegen, Body: []byte("slow cat")}, c)
	require.NoError(t, err)
	assert.Equal(t, `{"created":1,"data":[]}`, strings.Join(c.all(), ""))
}
