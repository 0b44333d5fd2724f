package router

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Request is what middleware sees of one client request.
type Request struct {
	ID         string
	Capability string
	Spec       wire.Spec
	Header     nats.Header
	Received   time.Time
}

// Result is a placed request: the node that accepted it.
type Result struct {
	Node     string
	Model    string
	Attempts int
	Score    float64
}

// Middleware runs around every infer request. BeforeRoute may refuse a
// request: its error goes to the client (a *wire.Error keeps its code,
// anything else is 500). AfterDispatch runs once a node accepted the
// request; OnError once the router answered the client with an error.
// Calls come from the request's goroutine and must not block for long.
type Middleware interface {
	BeforeRoute(ctx context.Context, r *Request) error
	AfterDispatch(r *Request, res *Result)
	OnError(r *Request, err error)
}

// logMiddleware writes the request lifecycle of DESIGN §7 as log lines.
type logMiddleware struct{ log zerolog.Logger }

func (m logMiddleware) BeforeRoute(_ context.Context, r *Request) error {
	m.log.Debug().Str("request", r.ID).Str("capability", r.Capability).Str("tenant", r.Spec.Tenant).
		Str("state", "routing").Msg("request received")
	return nil
}

func (m logMiddleware) AfterDispatch(r *Request, res *Result) {
	m.log.Debug().Str("request", r.ID).Str("node", res.Node).Str("model", res.Model).Int("attempts", res.Attempts).
		Float64("score", res.Score).Dur("took", time.Since(r.Received)).Str("state", "inferring").Msg("request placed")
}

func (m logMiddleware) OnError(r *Request, err error) {
	ev := m.log.Info()
	if wire.CodeOf(err) == wire.CodeInternal {
		ev = m.log.Error()
	}
	ev.Str("request", r.ID).Str("capability", r.Capability).Int("code", wire.CodeOf(err)).Err(err).
		Str("state", "failed").Msg("request not placed")
}

// limitMiddleware enforces per-tenant request rates (fed_config tenants).
type limitMiddleware struct{ limits *tenantLimits }

func (m limitMiddleware) BeforeRoute(_ context.Context, r *Request) error {
	if !m.limits.allow(r.Spec.Tenant) {
		return wire.Errorf(wire.CodeOverloaded, "tenant %q is over its request rate limit", r.Spec.Tenant)
	}
	return nil
}

func (limitMiddleware) AfterDispatch(*Request, *Result) {}
func (limitMiddleware) OnError(*Request, error)         {}
