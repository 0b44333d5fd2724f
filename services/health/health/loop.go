package health

import (
	"context"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// finalFlushTimeout bounds the flush of a stopping service.
const finalFlushTimeout = 2 * time.Second

// loop is the service's single timer goroutine: it applies the clock-driven
// transitions (silence, circuit reset), forgets departed nodes, starts
// probes, flushes fed_health, and publishes fed.health.stats.
func (s *Service) loop(ctx context.Context) {
	t := time.NewTicker(s.cfg.tick())
	defer t.Stop()
	var pub statsPub
	s.publishStats(&pub, time.Now(), true) // a follower started earlier learns this instance's view at once
	for {
		select {
		case <-ctx.Done():
			// Publish what is pending (a circuit that just opened) before
			// going away; bounded so Stop never hangs on a dead server.
			fctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
			s.flush(fctx, time.Now())
			s.flushStats(fctx, time.Now(), true) // a restart continues from here
			cancel()
			return
		case <-s.urgent:
			s.flush(ctx, time.Now())
		case now := <-t.C:
			forgotten, probes := s.sweep(now)
			for _, id := range probes {
				if !s.group.Go(func(ctx context.Context) { s.probe(ctx, id) }) {
					<-s.probes // stopping: give the slot back
				}
			}
			for _, f := range forgotten {
				s.forget(ctx, f)
			}
			s.flush(ctx, now)
			s.flushStats(ctx, now, false)
			s.publishStats(&pub, now, false)
		}
	}
}

// forgetJob is a node dropped from memory whose fed_health key goes next.
type forgetJob struct {
	id  string
	rev uint64
}

// sweep applies the timers to every node. It returns the nodes forgotten
// and the nodes to probe (their semaphore slot already taken).
func (s *Service) sweep(now time.Time) (forgotten []forgetJob, probes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.nodes {
		if !n.registered && now.Sub(n.lastReport) > s.cfg.ForgetAfter {
			delete(s.nodes, id)
			forgotten = append(forgotten, forgetJob{id: id, rev: n.kvRev})
			s.log.Info().Str(logging.KeyNode, id).Msg("node deregistered and silent: forgotten")
			continue
		}
		if s.checkStale(n, now) {
			n.bump(now)
		}
		if s.checkReset(n, now) {
			n.bump(now)
		}
		if s.wantsProbe(n, now) {
			select {
			case s.probes <- struct{}{}:
				n.probing, n.lastProbe = true, now
				probes = append(probes, id)
			default: // enough probes in flight; next tick
			}
		}
	}
	s.updateMeshState()
	return forgotten, probes
}

// wantsProbe: DESIGN §6 probes nodes that report nothing. A node that is
// unhealthy gets no traffic, so without a probe it could never earn the
// successes that bring it back: those are probed too. So are idle unknown
// nodes: a router scores unknown (0.3) below healthy (1.0), so with
// least_latency a node nobody has tried yet would never get the requests
// that make it healthy while another node is healthy.
func (s *Service) wantsProbe(n *node, now time.Time) bool {
	if n.probing || (!n.lastProbe.IsZero() && now.Sub(n.lastProbe) < s.cfg.CheckInterval) {
		return false
	}
	silent := now.Sub(n.lastReport) >= s.cfg.CheckInterval
	st := n.effectiveState()
	idle := now.Sub(n.lastOutcome) >= s.cfg.CheckInterval
	return silent || (idle && (st == record.StateUnhealthy || st == record.StateUnknown))
}
