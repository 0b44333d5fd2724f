package health

import (
	"context"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
)

// probe sends one request to the node's probe subject. Any reply without an
// error header is a success; an error reply, no responders or ProbeTimeout
// is a failure. Probes move the node state, not the circuit breaker
// (breaker.go says why). The caller took a slot of s.probes.
func (s *Service) probe(ctx context.Context, id string) {
	defer func() { <-s.probes }()
	pctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
	defer cancel()
	msg := nats.NewMsg(s.cfg.Subjects.NodeProbe(id))
	resp, err := s.nc.RequestMsgWithContext(pctx, msg)
	if err == nil {
		if werr := wire.ErrorFromHeader(resp.Header); werr != nil {
			err = werr
		}
	}
	if ctx.Err() != nil {
		return // stopping: the node is not to blame
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return
	}
	n.probing = false
	n.bump(now)
	if err != nil {
		s.log.Warn().Err(err).Str(logging.KeyNode, id).Str(logging.KeySubject, msg.Subject).Msg("probe failed")
		s.onFailure(n)
		s.wakeIfUrgent(n)
		return
	}
	// A node that answers probes is alive even without heartbeats, until
	// the next probe is due plus the usual grace. Only a node that is not
	// heartbeating: one probed while its heartbeats flow (an idle unknown
	// node) is judged by them, so its death is seen after the missed
	// heartbeats, not up to CheckInterval later (routers take a lost node's
	// requests over on that record).
	if now.Sub(n.lastAlive) > s.cfg.staleAfter() {
		n.aliveUntil = now.Add(s.cfg.CheckInterval + s.cfg.staleAfter())
	}
	n.lastReport = now
	s.checkStale(n, now)
	s.onSuccess(n, 0)
	s.log.Debug().Str(logging.KeyNode, id).Msg("probe succeeded")
	s.wakeIfUrgent(n)
}
