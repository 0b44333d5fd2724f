package tracing

import (
	"context"
	"net/http"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A trace crosses a NATS header and an HTTP header: each hop's span is a
// child of the one before, and nothing is written while tracing is off.
func TestPropagation(t *testing.T) {
	h := nats.Header{}
	ctx, s := Start(context.Background(), "off", Server)
	Inject(ctx, h)
	s.End()
	assert.Empty(t, h, "tracing off: nothing injected")

	rec := tracetest.NewSpanRecorder()
	Install(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	t.Cleanup(Uninstall)

	ctx, root := Start(context.Background(), "gateway", Server, KeyRequest.String("r1"))
	Inject(ctx, h)
	require.NotEmpty(t, h.Get("traceparent"))
	root.End()

	ctx2, hop := Start(Extract(context.Background(), h), "router", Server)
	hh := http.Header{}
	InjectHTTP(ctx2, propagation.HeaderCarrier(hh))
	hop.Fail(503, "no capacity")
	hop.End()
	_, last := Start(ExtractHTTP(context.Background(), propagation.HeaderCarrier(hh)), "backend", Client)
	last.End()

	spans := rec.Ended()
	require.Len(t, spans, 3)
	g, r, b := spans[0], spans[1], spans[2]
	assert.Equal(t, g.SpanContext().TraceID(), r.SpanContext().TraceID())
	assert.Equal(t, g.SpanContext().TraceID(), b.SpanContext().TraceID())
	assert.Equal(t, g.SpanContext().SpanID(), r.Parent().SpanID())
	assert.Equal(t, r.SpanContext().SpanID(), b.Parent().SpanID())
	assert.Equal(t, "Error", r.Status().Code.String())
}
