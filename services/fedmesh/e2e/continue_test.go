package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/tracing"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// upstream is a tiny OpenAI-compatible server: it streams words, and
// records what each chat request asked for.
type upstream struct {
	srv   *httptest.Server
	words []string
	hang  bool // stream the words, then hold the connection open (a node about to die)

	mu   sync.Mutex
	reqs []map[string]any
	hdrs []http.Header
}

func newUpstream(t *testing.T, hang bool, words ...string) *upstream {
	u := &upstream{words: words, hang: hang}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		u.mu.Lock()
		u.reqs = append(u.reqs, body)
		u.hdrs = append(u.hdrs, r.Header.Clone())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range u.words {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
			w.(http.Flusher).Flush()
		}
		if u.hang {
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() ([]map[string]any, []http.Header) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]map[string]any(nil), u.reqs...), append([]http.Header(nil), u.hdrs...)
}

func openaiNode(t *testing.T, id string, cost float64, u *upstream) nodeagent.Config {
	t.Helper()
	b, err := openai.New(openai.Config{BaseURL: u.srv.URL, Continue: true, StallTimeout: 10 * time.Second})
	require.NoError(t, err)
	c := nodeagent.DefaultConfig()
	c.NodeID, c.Region, c.Cost, c.GPU, c.MaxConcurrency = id, "eu", cost, true, 8
	c.Models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}
	c.Backend = b
	return c
}

// A stream whose OpenAI-compatible node dies after two chunks continues on
// another node from the text the client holds (vLLM continue_final_message):
// the caller reads one unbroken answer, and the second server was asked to
// continue exactly that text. With tracing on, gateway-less SDK → router →
// node → model server is one trace with one span per attempt.
func TestLostOpenAIStreamContinues(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(tracing.Uninstall)

	dying := newUpstream(t, true, "t0 ", "t1 ")
	rescuer := newUpstream(t, false, "t2 ", "t3")
	e := startWith(t, func(o *devmesh.Options) {
		o.Router = func(c *router.Config) { c.LostSilence = 3 * hbInterval }
	}, openaiNode(t, "a", 0.1, dying), openaiNode(t, "b", 0.9, rescuer))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx, root := tracing.Start(ctx, "test client", tracing.Client)
	h := map[string][]string{}
	tracing.Inject(ctx, h)
	st, err := e.c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("count to four"), Header: h})
	require.NoError(t, err)
	defer st.Close()
	var got []string
	var nodes []string
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		got = append(got, string(ch.Data))
		nodes = append(nodes, ch.Node)
		if len(got) == 2 {
			require.NoError(t, e.mesh.KillNode("a")) // a crash mid-stream
		}
	}
	res, err := st.Result()
	require.NoError(t, err)
	root.End()
	assert.Equal(t, "t0 t1 t2 t3", string(res.Body))
	assert.Equal(t, []string{"t0 ", "t1 ", "t2 ", "t3"}, got)
	assert.Equal(t, []string{"a", "a", "b", "b"}, nodes)
	assert.Equal(t, "b", res.Node)
	assert.EqualValues(t, 1, e.c.Resumed())
	assert.Zero(t, e.c.LateMessages())

	reqs, hdrs := rescuer.requests()
	require.Len(t, reqs, 1, "the second server got one continuation")
	msgs, _ := reqs[0]["messages"].([]any)
	require.NotEmpty(t, msgs)
	last, _ := msgs[len(msgs)-1].(map[string]any)
	assert.Equal(t, "assistant", last["role"])
	assert.Equal(t, "t0 t1 ", last["content"], "the text the client already had")
	assert.Equal(t, true, reqs[0]["continue_final_message"])
	assert.Equal(t, false, reqs[0]["add_generation_prompt"])

	// one trace: client → router (2 routes: the first placement and the
	// continuation) → attempts → nodes → the model servers
	traceID := root.TraceID()
	var names []string
	for _, s := range rec.Ended() {
		assert.Equal(t, traceID, s.SpanContext().TraceID().String(), "span %s in another trace", s.Name())
		names = append(names, s.Name())
		for _, kv := range s.Attributes() {
			assert.NotContains(t, kv.Value.Emit(), "count to four", "a span carries the prompt")
		}
	}
	assert.Subset(t, names, []string{"fedmesh.route generate", "fedmesh.dispatch", "fedmesh.infer generate"})
	dispatches := 0
	for _, n := range names {
		if n == "fedmesh.dispatch" {
			dispatches++
		}
	}
	assert.Equal(t, 2, dispatches, "one span per attempt: node a, then the continuation on b")
	require.NotEmpty(t, hdrs[0].Get("traceparent"), "the model server's request carries the trace")
	assert.True(t, strings.Contains(hdrs[0].Get("traceparent"), traceID))
}
