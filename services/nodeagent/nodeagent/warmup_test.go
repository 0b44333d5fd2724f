package nodeagent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// drain returns what ch holds once the first outcome came (or wait ran
// out) and 100 ms more passed: a second warm-up would be there by then.
func drain(ch chan record.Outcome, wait time.Duration) []record.Outcome {
	var got []record.Outcome
	select {
	case o := <-ch:
		got = append(got, o)
	case <-time.After(wait):
		return nil
	}
	time.Sleep(100 * time.Millisecond)
	for {
		select {
		case o := <-ch:
			got = append(got, o)
		default:
			return got
		}
	}
}

// A node with Warmup streams one short request per text model once it
// serves and publishes it as a probe outcome with its timing; embedding
// models get none, and a node without Warmup sends nothing.
func TestWarmup(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var body map[string]any
		assert.NoError(t, json.Unmarshal(data, &body))
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		time.Sleep(20 * time.Millisecond) // the first token's wait
		for _, tok := range []string{"Hel", "lo", "!", " "} {
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"`+tok+`"}}]}`+"\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
		_, _ = io.WriteString(w, `data: {"choices":[{"delta":{},"finish_reason":"length"}],"usage":{"completion_tokens":4}}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	r := newRig(t)

	for _, tc := range []struct {
		name string
		node string
		url  string
		want func(t *testing.T, got []record.Outcome)
	}{
		{"warm-up on", "warm", srv.URL, func(t *testing.T, got []record.Outcome) {
			require.Len(t, got, 1, "one per text model: m1 serves generate and code, emb only embed")
			o := got[0]
			assert.Equal(t, record.OutcomeProbe, o.Kind)
			assert.True(t, o.OK, o.Error)
			assert.Equal(t, wire.CapGenerate, o.Capability)
			assert.Equal(t, "m1", o.Model)
			assert.True(t, o.Stream)
			assert.Equal(t, 4, o.Tokens)
			assert.GreaterOrEqual(t, o.TTFTMs, 20.0, "from the call to the first token")
			assert.Greater(t, o.LatencyMs, o.TTFTMs)
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, bodies, 1)
			assert.Equal(t, 4.0, bodies[0]["max_tokens"], "a short answer")
			assert.Equal(t, true, bodies[0]["stream"])
			assert.Equal(t, "m1", bodies[0]["model"])
		}},
		{"a server that does not answer: a failed probe", "unreached", "http://127.0.0.1:1", func(t *testing.T, got []record.Outcome) {
			require.Len(t, got, 1)
			assert.Equal(t, record.OutcomeProbe, got[0].Kind)
			assert.False(t, got[0].OK)
			assert.Equal(t, wire.CodeNoCapacity, got[0].Code, "the backend's unreachable: %s", got[0].Error)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, err := openai.New(openai.Config{BaseURL: tc.url})
			require.NoError(t, err)
			outcomes := subscribeOutcomes(t, r.nc, tc.node)
			cfg := testConfig(tc.node, be)
			cfg.Warmup = true
			r.agent(cfg)
			tc.want(t, drain(outcomes, 5*time.Second))
		})
	}

	t.Run("warm-up off", func(t *testing.T) {
		be, err := openai.New(openai.Config{BaseURL: srv.URL})
		require.NoError(t, err)
		outcomes := subscribeOutcomes(t, r.nc, "cold")
		r.agent(testConfig("cold", be))
		assert.Empty(t, drain(outcomes, 300*time.Millisecond))
	})
}

// The YAML key backend.warmup: on by default for openai servers, off for
// synthetic, and either way when given.
func TestWarmupConfig(t *testing.T) {
	base := "node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"
	for _, tc := range []struct {
		name, backend string
		want          bool
	}{
		{"openai default", "{type: openai, url: 'http://127.0.0.1:8000/v1'}", true},
		{"openai off", "{type: openai, url: 'http://127.0.0.1:8000/v1', warmup: false}", false},
		{"synthetic default", "{type: synthetic}", false},
		{"synthetic on", "{type: synthetic, warmup: true}", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := ParseFile([]byte(base + "backend: " + tc.backend + "\n"))
			require.NoError(t, err)
			c, err := fc.Config(func(string) (string, bool) { return "", false })
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.Warmup)
		})
	}
	_, err := ParseFile([]byte(base + "backend: {warmup: sometimes}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sometimes", "the bad value is named")
}
