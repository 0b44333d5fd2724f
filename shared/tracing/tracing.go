// Package tracing carries W3C trace context (traceparent, tracestate)
// across the mesh's NATS messages and records spans with OpenTelemetry
// (DESIGN §13). It is off unless the standard OTLP environment names an
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// or a test installs a provider: then every part exports spans of metadata
// only (ids, capability, model, node, codes), never prompts or answers.
//
// It is its own module so that only the parts that trace pull in the
// OpenTelemetry SDK.
package tracing

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Instrumentation name of every fedmesh span.
const instrumentation = "github.com/fedmesh/fedmesh"

// Attribute keys (metadata only).
const (
	KeyRequest    = attribute.Key("fedmesh.request.id")
	KeyNode       = attribute.Key("fedmesh.node.id")
	KeyAttempt    = attribute.Key("fedmesh.attempt")
	KeyTenant     = attribute.Key("fedmesh.tenant")
	KeyCapability = attribute.Key("gen_ai.operation.name")
	KeyModel      = attribute.Key("gen_ai.request.model")
	KeyCode       = attribute.Key("fedmesh.code")
	KeyDecidedBy  = attribute.Key("fedmesh.decided_by")
	KeyTakeover   = attribute.Key("fedmesh.takeover")
)

// enabled is set once a provider is installed: the hot paths check it and
// skip every propagation step while tracing is off.
var enabled atomic.Bool

var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Enabled reports whether spans are recorded.
func Enabled() bool { return enabled.Load() }

// Setup installs an OTLP/HTTP exporter for service when the standard
// OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT environment names one; otherwise it
// does nothing and returns a no-op shutdown. The exporter reads the other
// OTEL_EXPORTER_OTLP_* variables (headers, TLS, protocol path) itself.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	Install(tp)
	return tp.Shutdown, nil
}

// Install makes tp the provider every fedmesh span goes to (Setup, tests).
func Install(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagator)
	enabled.Store(true)
}

// Uninstall turns tracing off again (tests).
func Uninstall() {
	enabled.Store(false)
	otel.SetTracerProvider(trace.NewNoopTracerProvider())
}

func tracer() trace.Tracer { return otel.Tracer(instrumentation) }

// HeaderCarrier adapts a NATS header to OpenTelemetry propagation. NATS
// header names are case-sensitive: traceparent and tracestate are written
// and read in lower case, as W3C spells them.
type HeaderCarrier nats.Header

func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return nats.Header(c).Get(key)
}

func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Extract returns ctx with the trace context a message carries.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if !enabled.Load() || h == nil {
		return ctx
	}
	return propagator.Extract(ctx, HeaderCarrier(h))
}

// Inject writes ctx's trace context into h (replacing what h carried).
func Inject(ctx context.Context, h nats.Header) {
	if !enabled.Load() || h == nil {
		return
	}
	delete(h, "traceparent")
	delete(h, "tracestate")
	propagator.Inject(ctx, HeaderCarrier(h))
}

// InjectHTTP writes ctx's trace context into an HTTP request's headers.
func InjectHTTP(ctx context.Context, h propagation.HeaderCarrier) {
	if !enabled.Load() {
		return
	}
	propagator.Inject(ctx, h)
}

// ExtractHTTP returns ctx with the trace context of HTTP headers.
func ExtractHTTP(ctx context.Context, h propagation.HeaderCarrier) context.Context {
	if !enabled.Load() {
		return ctx
	}
	return propagator.Extract(ctx, h)
}

// Span is a started span, or nothing while tracing is off: every method is
// safe on the zero Span.
type Span struct{ s trace.Span }

// Start starts a span named name as a child of ctx's span (kind: server
// for a request received, client for one sent, internal else).
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, Span) {
	if !enabled.Load() {
		return ctx, Span{}
	}
	ctx, s := tracer().Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
	return ctx, Span{s}
}

// Set adds attributes.
func (s Span) Set(attrs ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(attrs...)
	}
}

// Fail records a failure with its wire code (no message text: error
// descriptions may quote input).
func (s Span) Fail(code int, kind string) {
	if s.s != nil {
		s.s.SetAttributes(KeyCode.Int(code))
		s.s.SetStatus(codes.Error, kind)
	}
}

// End ends the span.
func (s Span) End() {
	if s.s != nil {
		s.s.End()
	}
}

// EndAt ends the span at t.
func (s Span) EndAt(t time.Time) {
	if s.s != nil {
		s.s.End(trace.WithTimestamp(t))
	}
}

// Kinds, re-exported so callers need not import the trace package.
const (
	Server   = trace.SpanKindServer
	Client   = trace.SpanKindClient
	Internal = trace.SpanKindInternal
)

// TraceID is the span's trace id in hex, "" while tracing is off (for
// logs: an access-log line can name the trace to look up).
func (s Span) TraceID() string {
	if s.s == nil {
		return ""
	}
	return s.s.SpanContext().TraceID().String()
}
