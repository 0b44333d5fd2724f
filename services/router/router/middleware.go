package router

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Inbound is what middleware sees of one client request as it reached the
// router: its id (assigned when the client sent none), capability, decoded
// routing headers, raw headers and arrival time.
type Inbound struct {
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
	// DecidedBy is the policy term that put Node ahead of the runner-up
	// (DESIGN §9.5); "" when it was the only candidate.
	DecidedBy string
	// Queued is how long the request waited in the router's queue.
	Queued time.Duration
	// PredictedTTFTMs and PrefixMatch are expected_ttft's judgement of the
	// node (0 under other strategies): expected time to first token, and
	// the share of the request's prefix blocks the node was sent before.
	PredictedTTFTMs float64
	PrefixMatch     float64
}

// Middleware runs around every infer request. BeforeRoute may refuse a
// request: its error goes to the client (a *wire.Error keeps its code,
// anything else is 500). AfterDispatch runs once a node accepted the
// request; OnError once the router answered the client with an error.
// Calls come from the request's goroutine and must not block for long.
type Middleware interface {
	BeforeRoute(ctx context.Context, in *Inbound) error
	AfterDispatch(in *Inbound, res *Result)
	OnError(in *Inbound, err error)
}

// logMiddleware writes the request lifecycle of DESIGN §7 as log lines.
type logMiddleware struct{ log zerolog.Logger }

func (m logMiddleware) BeforeRoute(_ context.Context, in *Inbound) error {
	m.log.Debug().Str(logging.KeyRequest, in.ID).Str("capability", in.Capability).Str(logging.KeyTenant, in.Spec.Tenant).
		Str("state", "routing").Msg("request received")
	return nil
}

func (m logMiddleware) AfterDispatch(in *Inbound, res *Result) {
	m.log.Debug().Str(logging.KeyRequest, in.ID).Str(logging.KeyNode, res.Node).Str(logging.KeyModel, res.Model).Int("attempts", res.Attempts).
		Float64("score", res.Score).Dur(logging.KeyElapsed, time.Since(in.Received)).Str("state", "inferring").Msg("request placed")
}

func (m logMiddleware) OnError(in *Inbound, err error) {
	ev := m.log.Info()
	if wire.CodeOf(err) == wire.CodeInternal {
		ev = m.log.Error()
	}
	ev.Str(logging.KeyRequest, in.ID).Str("capability", in.Capability).Int("code", wire.CodeOf(err)).Err(err).
		Str("state", "failed").Msg("request not placed")
}

// limitMiddleware enforces per-tenant request rates (fed_config tenants).
type limitMiddleware struct{ limits *tenantLimits }

func (m limitMiddleware) BeforeRoute(_ context.Context, in *Inbound) error {
	if !m.limits.allow(in.Spec.Tenant) {
		return wire.Errorf(wire.CodeOverloaded, "tenant %q is over its request rate limit", in.Spec.Tenant)
	}
	return nil
}

func (limitMiddleware) AfterDispatch(*Inbound, *Result) {}
func (limitMiddleware) OnError(*Inbound, error)         {}
