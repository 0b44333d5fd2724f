package health

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// The node state machine of DESIGN §6. Every method runs under Service.mu
// and only changes memory; the writer publishes the result.

// onSuccess applies a successful request or probe that took latency.
func (s *Service) onSuccess(n *node, latency time.Duration) {
	n.consecFail = 0
	if latency > s.cfg.DegradedLatency {
		// A slow success is a success (no failure streak) but no evidence of
		// a healthy node either: the streak towards healthy starts over.
		n.consecOK = 0
		n.state = record.StateDegraded
		return
	}
	n.consecOK++
	if n.consecOK >= s.cfg.HealthyAfter {
		n.state = record.StateHealthy
	}
}

// onFailure applies a failed request or probe.
func (s *Service) onFailure(n *node) {
	n.consecOK = 0
	n.consecFail++
	if n.consecFail >= s.cfg.UnhealthyAfter {
		n.state = record.StateUnhealthy
	} else {
		n.state = record.StateDegraded
	}
}

// checkStale marks a node that missed MissedHeartbeats intervals. It
// reports whether the flag changed.
func (s *Service) checkStale(n *node, now time.Time) bool {
	silent := now.Sub(n.lastAlive) > s.cfg.staleAfter() && now.After(n.aliveUntil)
	if silent == n.stale {
		return false
	}
	n.stale = silent
	if silent {
		n.markStale()
		s.log.Warn().Str(logging.KeyNode, n.id).Dur("silent_for", now.Sub(n.lastAlive)).Msg("node missed its heartbeats: unhealthy")
		return true
	}
	s.log.Info().Str(logging.KeyNode, n.id).Msg("node heard again")
	return true
}

// markStale is what going silent does to the remembered state: a node that
// comes back must prove itself again (it may have restarted), unless its
// own failure streak already says more.
func (n *node) markStale() {
	n.consecOK = 0
	if n.consecFail == 0 {
		n.state = record.StateUnknown
	}
}
