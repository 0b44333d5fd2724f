package health

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// The per-node circuit breaker of DESIGN §6. Only real requests move it
// (completed and dispatch_failed outcomes): active probes test liveness,
// while half_open's "one probe request at a time" is a routed request the
// router admits. Runs under Service.mu.

func (s *Service) breakerSuccess(n *node) {
	n.breakerFail = 0
	if n.circuit != record.CircuitHalfOpen {
		return
	}
	n.halfOpenOK++
	if n.halfOpenOK >= s.cfg.HalfOpenSuccesses {
		n.circuit = record.CircuitClosed
		n.openedAt = time.Time{}
		n.halfOpenOK = 0
		s.log.Info().Str(logging.KeyNode, n.id).Msg("circuit closed")
	}
}

func (s *Service) breakerFailure(n *node, now time.Time) {
	n.breakerFail++
	switch n.circuit {
	case record.CircuitHalfOpen:
		s.openCircuit(n, now, "failure in half_open")
	case record.CircuitClosed:
		if n.breakerFail >= s.cfg.FailureThreshold {
			s.openCircuit(n, now, "failure threshold reached")
		}
	}
	// Failures while open are late answers of requests sent before it
	// opened: they do not extend the reset timeout.
}

func (s *Service) openCircuit(n *node, now time.Time, why string) {
	n.circuit = record.CircuitOpen
	n.openedAt = now
	n.halfOpenOK = 0
	s.log.Warn().Str(logging.KeyNode, n.id).Int("consecutive_failures", n.breakerFail).Str("reason", why).Msg("circuit opened")
}

// breakerRestart is the circuit's part of an agent restart: the failures
// that opened it were the previous process's, so the new one is tried at
// once, one request at a time per router (half_open), rather than after
// what is left of reset_timeout; a node that keeps failing opens it again
// with its first failure.
func (s *Service) breakerRestart(n *node) {
	n.breakerFail = 0
	if n.circuit != record.CircuitOpen {
		return
	}
	n.circuit = record.CircuitHalfOpen
	n.halfOpenOK = 0
	s.log.Info().Str(logging.KeyNode, n.id).Msg("circuit half_open: the agent restarted")
}

// checkReset moves an open circuit to half_open once ResetTimeout passed.
func (s *Service) checkReset(n *node, now time.Time) bool {
	if n.circuit != record.CircuitOpen || now.Sub(n.openedAt) < s.cfg.ResetTimeout {
		return false
	}
	n.circuit = record.CircuitHalfOpen
	n.halfOpenOK = 0
	if n.state == record.StateUnhealthy {
		// Routers skip unhealthy nodes (DESIGN §6 candidates), so an
		// unhealthy half_open node would never get its probe request.
		n.state = record.StateDegraded
	}
	s.log.Info().Str(logging.KeyNode, n.id).Msg("circuit half_open")
	return true
}
