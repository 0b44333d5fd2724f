package nodeagent

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// job is one accepted request.
type job struct {
	req        backend.Request
	reply      wire.Reply
	tenant     string
	attempt    int
	routeScore string
	start      time.Time
	ctx        context.Context
	cancel     func(cause error)
	started    bool // first token emitted; guarded by Service.mu
}

// run executes an accepted request on the backend and ends it with exactly
// one final message to the client, then one outcome event.
func (s *Service) run(j *job) {
	defer j.cancel(nil)
	defer s.release(j)
	var (
		body  []byte
		ttft  time.Duration
		first = true
		sent  error // a publish to the client failed
	)
	emit := func(chunk []byte) error {
		if err := j.ctx.Err(); err != nil {
			return context.Cause(j.ctx)
		}
		if len(chunk) == 0 {
			return nil // an empty chunk would read as the ADR-47 end sentinel
		}
		if first {
			first = false
			ttft = time.Since(j.start)
			s.mu.Lock()
			j.started = true
			s.waiting--
			s.mu.Unlock()
		}
		if !j.req.Stream {
			body = append(body, chunk...)
			return nil
		}
		if err := s.nc.PublishMsg(j.reply.Chunk(chunk)); err != nil {
			sent = err
			j.cancel(errLost)
			return errLost
		}
		if j.reply.Seq() == 1 {
			// The first token's latency is what users feel: push it out now
			// rather than when the write buffer fills.
			_ = s.nc.FlushTimeout(time.Second)
		}
		return nil
	}
	res, err := s.cfg.Backend.Generate(j.ctx, j.req, emit)
	latency := time.Since(j.start)

	var final *nats.Msg
	var werr *wire.Error
	if err != nil {
		werr = s.failure(j, err)
		final = j.reply.Fail(werr.Code, werr.Description)
	} else {
		var data []byte
		if !j.req.Stream {
			data = body
		}
		final = j.reply.Done(data, wire.DoneInfo{Tokens: res.Tokens, LatencyMs: ms(latency), TTFTMs: ms(ttft), RouteScore: j.routeScore})
		if res.ContentType != "" {
			final.Header.Set(wire.HdrContentType, res.ContentType)
		}
		s.observe(res.Tokens, latency-ttft)
	}
	if sent == nil {
		if perr := s.nc.PublishMsg(final); perr != nil && !s.nc.IsClosed() {
			s.log.Warn().Err(perr).Str("request", j.req.RequestID).Msg("final message not sent")
		}
	}
	o := record.Outcome{Kind: record.OutcomeCompleted, NodeID: s.cfg.NodeID, RequestID: j.req.RequestID, OK: err == nil,
		Capability: j.req.Capability, Model: j.req.Model, Tenant: j.tenant, Attempt: j.attempt,
		LatencyMs: ms(latency), TTFTMs: ms(ttft), Tokens: res.Tokens, Stream: j.req.Stream, Time: time.Now().UTC()}
	if werr != nil {
		o.Code, o.Error = werr.Code, werr.Description
	}
	s.outcome(o)
	ev := s.log.Debug()
	if werr != nil && werr.Code != wire.CodeCanceled {
		ev = s.log.Warn().Int("code", werr.Code).Str("error", werr.Description)
	}
	ev.Str("request", j.req.RequestID).Str("model", j.req.Model).Int("tokens", res.Tokens).
		Dur("latency", latency).Msg("request finished")
}

// failure turns a backend error into the final error: the reason the
// context ended wins (cancel, deadline, drain), else the backend's code.
func (s *Service) failure(j *job, err error) *wire.Error {
	var we *wire.Error
	if j.ctx.Err() != nil {
		if !errors.As(context.Cause(j.ctx), &we) {
			we = errCanceled
		}
	} else if !errors.As(err, &we) {
		we = &wire.Error{Code: wire.CodeInternal, Description: "backend " + s.cfg.Backend.Name() + ": " + err.Error()}
	}
	out := *we
	out.RequestID, out.Node = j.req.RequestID, s.cfg.NodeID
	return &out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
