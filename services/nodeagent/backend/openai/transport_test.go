package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// words is the answer of the upstream server: the same text streamed
// (one delta per piece) or whole, as the request asks.
func words(prompt string) []string {
	return []string{"Re: ", prompt, " — ", "\"quoted\" ", "<tags> & ", "naïve ", "日本語 ", "tab\there", "\n"}
}

// upstream is a vLLM-like server: the prompt picks the outcome ("fail" →
// HTTP 500, "midfail" → an error event then [DONE]), "stream" in the body
// picks SSE or one JSON answer. It counts the TCP connections it accepts.
type upstream struct {
	srv    *httptest.Server
	opened atomic.Int64
	warm   sync.WaitGroup // prompt "warm" waits until every warm-up request arrived
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.opened.Add(1)
		}
	}
	u.srv.Start()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Stream   bool `json:"stream"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
		Prompt string `json:"prompt"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	prompt := body.Prompt
	if len(body.Messages) > 0 {
		prompt = body.Messages[0].Content
	}
	ws := words(prompt)
	if prompt == "warm" {
		u.warm.Done()
		u.warm.Wait()
	}
	switch {
	case prompt == "fail":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":{"message":"CUDA out of memory"}}`)
	case !body.Stream:
		w.Header().Set("Content-Type", "application/json")
		m, _ := json.Marshal(map[string]any{"object": "chat.completion", "choices": []any{map[string]any{"index": 0,
			"message": map[string]string{"role": "assistant", "content": strings.Join(ws, "")}, "finish_reason": "stop"}},
			"usage": map[string]int{"prompt_tokens": 1, "completion_tokens": len(ws), "total_tokens": 1 + len(ws)}})
		_, _ = w.Write(m)
	default:
		sseHeaders(w)
		if prompt == "midfail" {
			delta(w, "partial")
			fmt.Fprint(w, `data: {"error":{"message":"engine crashed"}}`+"\n\n")
		} else {
			for _, s := range ws {
				delta(w, s)
			}
			fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n")
		}
		// vLLM ends every stream, an errored one too, with [DONE]; the
		// chunked terminator follows in its own write, as from uvicorn.
		fmt.Fprint(w, "data: [DONE]\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(time.Millisecond)
	}
}

func (u *upstream) backend(t testing.TB, mod ...func(*Config)) *Backend {
	cfg := Config{BaseURL: u.srv.URL, StallTimeout: 5 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	b, err := New(cfg)
	require.NoError(t, err)
	return b
}

// joined runs a call and returns its emitted text, the way the agent
// builds a whole answer from the pieces.
func joined(ctx context.Context, b *Backend, call backend.Call) (string, backend.Result, error) {
	var buf bytes.Buffer
	call.Model, call.Capability = "m", wire.CapGenerate
	res, err := b.Generate(ctx, call, func(p []byte) error { buf.Write(p); return nil })
	return buf.String(), res, err
}

// The old client (2 idle connections per host, SSE bodies closed at
// [DONE] unread to EOF) opened a connection for most requests; the pooled,
// drained one opens one per request in flight and no more, on every path
// that ends with the server done: streams, whole answers, HTTP errors,
// error events.
func TestConnectionsAreReused(t *testing.T) {
	const conc, rounds = 8, 6
	calls := []backend.Call{
		{Body: []byte("hello"), Stream: true},
		{Body: []byte("hello")},
		{Body: []byte("fail"), Stream: true},
		{Body: []byte("midfail"), Stream: true},
		{Body: []byte(`{"prompt":"complete me"}`)},
	}
	cases := []struct {
		name    string
		before  bool // the old client: http.Client{} (2 idle connections per host)
		noDrain bool // bodies closed at [DONE], unread to EOF
	}{
		{name: "pooled and drained"},
		{name: "pooled, not drained (shows the drain matters)", noDrain: true},
		{name: "old client (shows the test can fail)", before: true, noDrain: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := newUpstream(t)
			b := u.backend(t, func(c *Config) {
				c.MaxConns = conc
				if tc.before {
					c.Client = &http.Client{}
				}
			})
			if tc.noDrain {
				b.drainLimit = 0
			}
			total := 0
			run := func(call backend.Call) {
				_, _, err := joined(context.Background(), b, call)
				if p := string(call.Body); p == "fail" || p == "midfail" {
					assert.Error(t, err, p)
				} else {
					assert.NoError(t, err, p)
				}
			}
			// Sequential: one connection serves them all.
			for range rounds {
				for _, c := range calls {
					run(c)
					total++
				}
			}
			seq := u.opened.Load()
			// Warm-up: conc requests in flight at once (the server holds each
			// until all arrived) need conc connections.
			u.warm.Add(conc)
			var wg sync.WaitGroup
			for range conc {
				wg.Go(func() { run(backend.Call{Body: []byte("warm"), Stream: true}) })
			}
			wg.Wait()
			total += conc
			warm := u.opened.Load()
			// Concurrent: conc workers, each its calls one after another; the
			// warm pool serves them all (a request never finds it empty: a
			// connection is back in it before its Generate returns).
			for range conc {
				wg.Go(func() {
					for range rounds {
						for _, c := range calls {
							run(c)
						}
					}
				})
			}
			wg.Wait()
			total += conc * rounds * len(calls)
			opened := u.opened.Load()
			newConns, reused := b.Stats()
			t.Logf("%d requests: %d connections opened (%d sequential, %d after warm-up), stats new=%d reused=%d",
				total, opened, seq, warm, newConns, reused)
			// A dial that lost the race to a returned connection is opened
			// but never used: the client may count fewer.
			assert.LessOrEqual(t, newConns, uint64(opened), "the client counts the connections it used")
			assert.Positive(t, newConns)
			assert.Equal(t, uint64(total), newConns+reused, "every request got one connection")
			switch {
			case tc.before:
				assert.Greater(t, opened, int64(conc), "the old client opens more than one connection per request in flight")
				return
			case tc.noDrain:
				assert.Greater(t, seq, int64(1), "a stream closed at [DONE] loses its connection")
				return
			}
			assert.Equal(t, int64(1), seq, "sequential requests reuse one connection")
			assert.Equal(t, int64(conc), warm, "one connection per request in flight")
			assert.Equal(t, int64(conc), opened, "no new connection after warm-up")
			assert.Equal(t, uint64(opened), newConns)
		})
	}
}

// A request abandoned mid-stream (a failed emit) closes its connection at
// once, no drain: that is how the server learns to stop generating.
func TestAbandonedBodyIsNotDrained(t *testing.T) {
	gone := make(chan time.Time, 1)
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		delta(w, "tok")
		<-r.Context().Done() // keeps generating until the client goes away
		gone <- time.Now()
	})
	b := f.backend(func(c *Config) { c.StallTimeout = 5 * time.Second })
	errStop := errors.New("client gone")
	t0 := time.Now()
	_, err := b.Generate(context.Background(), backend.Call{Model: "m", Capability: wire.CapGenerate, Body: []byte("x"), Stream: true},
		func([]byte) error { return errStop })
	require.ErrorIs(t, err, errStop, "emit's error is returned as it is")
	assert.Less(t, time.Since(t0), 500*time.Millisecond, "returns at once")
	select {
	case at := <-gone:
		assert.Less(t, at.Sub(t0), 500*time.Millisecond, "the server saw the request end")
	case <-time.After(2 * time.Second):
		t.Fatal("the connection was kept open (drained) after the client gave up")
	}
}

// The answer a client that does not stream gets (one JSON answer) is
// byte for byte the concatenation of the streamed deltas for the same text.
func TestWholeAnswerIsTheStreamJoined(t *testing.T) {
	u := newUpstream(t)
	b := u.backend(t)
	for _, body := range []string{"hello", `{"messages":[{"role":"user","content":"q \u00e9"}],"stream":true}`, `{"prompt":"p"}`} {
		streamed, sres, err := joined(context.Background(), b, backend.Call{Body: []byte(body), Stream: true})
		require.NoError(t, err)
		whole, wres, err := joined(context.Background(), b, backend.Call{Body: []byte(body)})
		require.NoError(t, err)
		assert.Equal(t, streamed, whole, body)
		assert.NotEmpty(t, whole)
		assert.Equal(t, sres.Tokens, wres.Tokens, "deltas counted = usage.completion_tokens here")
	}
}

// A whole answer's server sends its headers only when done: a generation
// longer than StallTimeout is not a stall. A body that stops half-way is.
func TestWholeTextStallTimer(t *testing.T) {
	cases := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request)
		code   int
	}{
		{"slow generation", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(300 * time.Millisecond)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"choices":[{"message":{"content":"took a while"}}]}`)
		}, 0},
		{"body stalls", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"choices":[{"message":`)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, wire.CodeTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.handle)
			b := f.backend(func(c *Config) { c.StallTimeout = 100 * time.Millisecond })
			c := newCollected()
			_, err := gen(b, context.Background(), backend.Call{Body: []byte("x")}, c)
			assert.Equal(t, false, f.seen().body["stream"])
			if tc.code == 0 {
				require.NoError(t, err)
				assert.Equal(t, []string{"took a while"}, c.all())
				return
			}
			var we *wire.Error
			require.ErrorAs(t, err, &we)
			assert.Equal(t, tc.code, we.Code, we.Description)
		})
	}
}

func TestTransportSizedByMaxConns(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, DefaultMaxConns}, {256, 256}, {3, 3}} {
		b, err := New(Config{BaseURL: "http://h:1", MaxConns: tc.in})
		require.NoError(t, err)
		tr, ok := b.cfg.Client.Transport.(*http.Transport)
		require.True(t, ok)
		assert.Equal(t, tc.want, tr.MaxIdleConnsPerHost)
		assert.GreaterOrEqual(t, tr.MaxIdleConns, tc.want)
	}
	own := &http.Client{}
	b, err := New(Config{BaseURL: "http://h:1", Client: own, MaxConns: 5})
	require.NoError(t, err)
	assert.Same(t, own, b.cfg.Client, "a given client is used as it is")
}

// BenchmarkTransport compares the old client (2 idle connections, SSE
// closed at [DONE] unread, whole answers streamed and joined) with the
// pooled, drained one asking whole answers whole, at 32 requests in flight.
//
//	go test -run '^$' -bench Transport -benchtime 2000x ./backend/openai/
func BenchmarkTransport(bm *testing.B) {
	for _, mode := range []string{"before", "after"} {
		for _, stream := range []bool{true, false} {
			name := mode + "/whole"
			if stream {
				name = mode + "/stream"
			}
			bm.Run(name, func(bm *testing.B) {
				u := newUpstream(bm)
				b := u.backend(bm, func(c *Config) {
					c.MaxConns = 32
					if mode == "before" {
						c.Client = &http.Client{}
					}
				})
				call := backend.Call{Body: []byte("bench"), Stream: stream}
				if mode == "before" {
					b.drainLimit = 0
					call.Stream = true // the old backend always streamed
				}
				bm.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
				bm.ReportAllocs()
				bm.ResetTimer()
				bm.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, _, err := joined(context.Background(), b, call); err != nil {
							bm.Error(err)
							return
						}
					}
				})
				bm.StopTimer()
				newConns, _ := b.Stats()
				bm.ReportMetric(float64(newConns)/float64(bm.N), "newconns/op")
			})
		}
	}
}
