package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/tracing"
)

// A caller's W3C trace context at the gateway (DESIGN §13) is the parent of
// the whole request: gateway → router → one attempt → node → the model
// server's HTTP request, every span in the caller's trace, each the child
// of the hop before, tracestate carried to the model server, and no span
// carrying the prompt or the answer.
func TestTraceFromTheGatewayCaller(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tracing.Install(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(tracing.Uninstall)

	up := newUpstream(t, false, "secret ", "answer")
	gc := gateway.DefaultConfig()
	gc.Addr = "127.0.0.1:0"
	gc.Keys = map[string]gateway.Tenant{"trace-key": {ID: "acme"}}
	e := startWith(t, func(o *devmesh.Options) { o.Gateway = &gc }, openaiNode(t, "a", 0.1, up))

	const (
		traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerID = "00f067aa0ba902b7"
		state    = "vendor=opaque-1"
	)
	req, err := http.NewRequest(http.MethodPost, "http://"+e.mesh.Gateway.Addr()+"/v1/chat/completions",
		strings.NewReader(`{"model":"m1","stream":true,"messages":[{"role":"user","content":"a private prompt"}]}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer trace-key")
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerID+"-01")
	req.Header.Set("tracestate", state)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Contains(t, string(body), "answer")

	// The router ends its route and dispatch spans when the node's outcome
	// arrives, which may be after the gateway has answered: wait for them.
	chain := []string{"fedmesh.gateway generate", "fedmesh.route generate", "fedmesh.dispatch", "fedmesh.infer generate"}
	natsembed.Eventually(t, 5*time.Second, func() error {
		ended := map[string]bool{}
		for _, s := range rec.Ended() {
			ended[s.Name()] = true
		}
		for _, name := range chain {
			if !ended[name] {
				return fmt.Errorf("span %s not ended yet", name)
			}
		}
		return nil
	})
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		assert.Equal(t, traceID, s.SpanContext().TraceID().String(), "span %s in another trace", s.Name())
		byName[s.Name()] = append(byName[s.Name()], s)
		for _, kv := range s.Attributes() {
			v := kv.Value.Emit()
			assert.NotContains(t, v, "private prompt", "span %s carries the prompt", s.Name())
			assert.NotContains(t, v, "secret", "span %s carries the answer", s.Name())
		}
	}
	for _, name := range chain {
		require.Len(t, byName[name], 1, "one %s span (one attempt) among %v", name, byName)
	}
	assert.Equal(t, callerID, byName[chain[0]][0].Parent().SpanID().String(), "the caller's span is the gateway's parent")
	for i := 1; i < len(chain); i++ {
		parent, child := byName[chain[i-1]][0], byName[chain[i]][0]
		assert.Equal(t, parent.SpanContext().SpanID(), child.Parent().SpanID(), "%s is a child of %s", chain[i], chain[i-1])
	}

	_, hdrs := up.requests()
	require.Len(t, hdrs, 1)
	infer := byName["fedmesh.infer generate"][0].SpanContext()
	assert.Equal(t, "00-"+traceID+"-"+infer.SpanID().String()+"-01", hdrs[0].Get("traceparent"),
		"the model server's request is a child of the node's span")
	assert.Equal(t, state, hdrs[0].Get("tracestate"), "tracestate travels with the trace")
}
