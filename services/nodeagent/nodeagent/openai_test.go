package nodeagent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// vllm is an in-test OpenAI-compatible server. The prompt picks its
// behaviour: "ok" streams words, "hang" streams one word then waits for the
// client to go away, "fail" breaks with an error event mid-stream.
func vllm(t *testing.T, canceled chan<- time.Time) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Stream   bool `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		prompt := body.Messages[0].Content
		if !body.Stream { // a whole answer is asked for whole
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"w0 w1 w2 w3 w4 "},"finish_reason":"stop"}],"usage":{"completion_tokens":5}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(s string) {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":%q}}]}\n\n", s)
			w.(http.Flusher).Flush()
		}
		switch prompt {
		case "hang":
			send("first")
			<-r.Context().Done()
			canceled <- time.Now()
		case "fail":
			send("first")
			fmt.Fprint(w, "data: {\"error\":{\"message\":\"engine died\"}}\n\n")
		default:
			for i := 0; i < 5; i++ {
				send(fmt.Sprintf("w%d ", i))
				time.Sleep(10 * time.Millisecond)
			}
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestOpenAIBackendOverNATS(t *testing.T) {
	r := newRig(t)
	canceled := make(chan time.Time, 4)
	be, err := openai.New(openai.Config{BaseURL: vllm(t, canceled)})
	require.NoError(t, err)
	s, _ := r.agent(testConfig("oa", be))

	st := r.dispatch("oa", "ok", stream)
	require.Equal(t, wire.StatusAccepted, st.status)
	a := st.read(t, 3*time.Second)
	assert.Equal(t, "w0 w1 w2 w3 w4 ", a.text())
	assert.Len(t, a.chunks, 5)
	assert.Equal(t, wire.StatusDone, a.final.Header.Get(wire.HdrStatus))

	wh := r.dispatch("oa", "ok")
	a = wh.read(t, 3*time.Second)
	assert.Empty(t, a.chunks)
	assert.Equal(t, "w0 w1 w2 w3 w4 ", string(a.final.Data), "a whole answer is the concatenated stream")
	assert.Equal(t, "5", a.final.Header.Get(wire.HdrTokens))

	fl := r.dispatch("oa", "fail", stream)
	a = fl.read(t, 3*time.Second)
	assert.Equal(t, "first", a.text())
	e := wire.ErrorFromHeader(a.final.Header)
	require.NotNil(t, e)
	assert.Equal(t, wire.CodeInternal, e.Code)
	assert.Contains(t, e.Description, "engine died")

	// Cancel over NATS cancels the HTTP request to the model server.
	hg := r.dispatch("oa", "hang", stream)
	first, err := hg.sub.NextMsg(3 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, "first", string(first.Data))
	t0 := time.Now()
	require.NoError(t, r.nc.Publish(subject.Default.Cancel(hg.id), nil))
	select {
	case at := <-canceled:
		assert.Less(t, at.Sub(t0), 500*time.Millisecond)
	case <-time.After(3 * time.Second):
		t.Fatal("the model server never saw the request cancelled")
	}
	fin, err := hg.sub.NextMsg(3 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, wire.CodeCanceled, codeOf(fin))

	// Drain with OpenAI streams in flight cuts none of them.
	var calls []*call
	for i := 0; i < 3; i++ {
		calls = append(calls, r.dispatch("oa", "ok", stream))
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop() }()
	for _, c := range calls {
		require.Equal(t, wire.StatusAccepted, c.status)
		a := c.read(t, 3*time.Second)
		assert.Equal(t, "w0 w1 w2 w3 w4 ", a.text())
		assert.Equal(t, wire.StatusDone, a.final.Header.Get(wire.HdrStatus))
	}
	require.NoError(t, <-stopped)
}

// Requests one after the other reuse the backend's keep-alive connection,
// and the agent's metrics say so (issue 16: ≈ 0 new connections per request
// after warm-up).
func TestOpenAIBackendConnectionReuse(t *testing.T) {
	r := newRig(t)
	be, err := openai.New(openai.Config{BaseURL: vllm(t, make(chan time.Time, 1))})
	require.NoError(t, err)
	s, _ := r.agent(testConfig("oa", be))
	const n = 6
	for i := range n {
		opts := []dispatchOpt{}
		if i%2 == 0 {
			opts = append(opts, stream) // streamed and whole answers share the pool
		}
		c := r.dispatch("oa", "ok", opts...)
		require.Equal(t, wire.StatusAccepted, c.status)
		require.Equal(t, wire.StatusDone, c.read(t, 3*time.Second).final.Header.Get(wire.HdrStatus))
	}
	m := scrape(t, s)
	const name = "fedmesh_node_backend_connections_total"
	assert.Equal(t, 1.0, m.Value(name, metricstest.Labels{"reused": "false"}), "one connection opened")
	assert.Equal(t, float64(n-1), m.Value(name, metricstest.Labels{"reused": "true"}), "every later request reused it")
}
