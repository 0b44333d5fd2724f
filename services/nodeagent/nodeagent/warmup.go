package nodeagent

import (
	"context"
	"errors"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// WarmupBody is the warm-up request (DESIGN §9.2 `probe`): a chat request
// (the mapping every plain prompt gets) whose answer is a few tokens, so it
// times the server's first token and a few decode steps, and costs little.
const WarmupBody = `{"messages":[{"role":"user","content":"Say hello."}],"max_tokens":4}`

// WarmupTimeout bounds one warm-up request.
const WarmupTimeout = wire.DefaultTimeout

// warmupRequestID marks a warm-up's outcome and its backend call; no
// router dispatched it, so no router waits for it.
const warmupRequestID = "warmup"

// warmup streams one short request per text model through the backend
// before the node registers, so it joins the mesh measured: its outcomes go
// out as `probe` outcomes right after its first heartbeat (heartbeatLoop),
// health then holds the node's TTFT per model, and routers place its first
// request by it instead of by the new-node prior (DESIGN §6.7). A server
// that fails the warm-up gets a failed probe, which health judges like a
// request's failure without touching the circuit; the node registers
// either way. Cut short by ctx, it returns what it has.
func (s *Service) warmup(ctx context.Context) []record.Outcome {
	var out []record.Outcome
	for _, m := range s.cfg.Models {
		c := wire.CapGenerate
		if !m.Serves(c) {
			c = wire.CapCode
		}
		if !m.Serves(c) {
			continue
		}
		o := s.warmupOne(ctx, c, m.ModelID)
		if ctx.Err() != nil {
			break // a cut warm-up says nothing about the server
		}
		out = append(out, o) // one per model: both capabilities run the same model
	}
	return out
}

// warmupOne runs one warm-up request and returns its outcome.
func (s *Service) warmupOne(ctx context.Context, capability, model string) record.Outcome {
	ctx, cancel := context.WithTimeout(ctx, WarmupTimeout)
	defer cancel()
	call := backend.Call{RequestID: warmupRequestID, Capability: capability, Model: model,
		Body: []byte(WarmupBody), Stream: true}
	start := time.Now()
	var ttft time.Duration
	res, err := s.cfg.Backend.Generate(ctx, call, func([]byte) error {
		if ttft == 0 {
			ttft = max(time.Since(start), time.Microsecond) // a first token at once is still timed
		}
		return nil
	})
	latency := time.Since(start)
	o := record.Outcome{Kind: record.OutcomeProbe, NodeID: s.cfg.NodeID, RequestID: warmupRequestID,
		OK: err == nil, Capability: capability, Model: model, LatencyMs: ms(latency), TTFTMs: ms(ttft),
		Tokens: res.Tokens, Stream: true, Time: time.Now().UTC()}
	log := s.log.Debug()
	if err != nil {
		var werr *wire.Error
		if !errors.As(err, &werr) {
			werr = wire.Errorf(wire.CodeInternal, "backend %s: %v", s.cfg.Backend.Name(), err) // as a request's failure says it
		}
		if errors.Is(err, context.DeadlineExceeded) {
			werr = wire.Errorf(wire.CodeTimeout, "warm-up: no answer within %s", WarmupTimeout)
		}
		o.Code, o.Error = werr.Code, werr.Description
		log = s.log.Warn().Err(err)
	}
	log.Str(logging.KeyModel, model).Str("capability", capability).Dur("ttft", ttft).Dur("latency", latency).
		Int("tokens", res.Tokens).Msg("warm-up")
	return o
}
