package nodeagent

import (
	"context"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// tpsWeight is the weight of the newest request in the throughput average.
const tpsWeight = 0.2

// observe folds one successful request's decode speed into the throughput
// estimate. Throughput is what the node can do per request (tokens/s while
// generating), kept between requests, so an idle node does not look slow to
// the router's Fed-Min-Throughput filter.
func (s *Service) observe(tokens int, gen time.Duration) {
	if tokens <= 1 || gen <= 0 {
		return
	}
	tps := float64(tokens-1) / gen.Seconds() // tokens after the first, over the time after it
	s.mu.Lock()
	if s.tps == 0 {
		s.tps = tps
	} else {
		s.tps += tpsWeight * (tps - s.tps)
	}
	s.mu.Unlock()
}

// heartbeatLoop runs on the loops group until it stops. warmups (the
// warm-up's outcomes, warmup.go) go out right after the first heartbeat, so
// health knows this instance before them (a new instance resets the node's
// state); they are no requests, so never in a batch window.
func (s *Service) heartbeatLoop(ctx context.Context, warmups []record.Outcome) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	reconnects := s.nc.Stats().Reconnects
	if s.load != nil {
		s.load.start(s.loops) // the scrape runs beside the heartbeats, on the same group
	}
	s.publishHeartbeat()
	if len(warmups) > 0 {
		s.publishOutcomes(warmups)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.publishHeartbeat()
			if n := s.nc.Stats().Reconnects; n != reconnects {
				reconnects = n
				s.reregister("reconnected")
			}
		}
	}
}

// reregister registers again (same instance id): after a reconnect, since
// the catalog may have expired the record while the node was cut off, and
// when the node's own record vanished from fed_catalog (followRecord). It
// runs beside the heartbeat loop, one register at a time; a request that
// comes while one runs makes it register once more afterwards, so a record
// deleted just after a register succeeded still comes back. Nothing is
// registered once the node drains.
func (s *Service) reregister(why string) {
	if s.isDraining() {
		return
	}
	s.reregWanted.Store(true)
	if !s.reregistering.CompareAndSwap(false, true) {
		return // the running one picks the request up
	}
	started := s.loops.Go(func(ctx context.Context) {
		for {
			for s.reregWanted.Swap(false) {
				if s.isDraining() || ctx.Err() != nil {
					break
				}
				s.log.Info().Str("reason", why).Msg("registering again")
				if err := s.register(ctx); err != nil && ctx.Err() == nil {
					s.log.Error().Err(err).Str("reason", why).Msg("register again")
				}
			}
			s.reregistering.Store(false)
			// A request between the last Swap and the Store above found
			// the flag still set and left: take it up here.
			if !s.reregWanted.Load() || ctx.Err() != nil || !s.reregistering.CompareAndSwap(false, true) {
				return
			}
		}
	})
	if !started {
		s.reregistering.Store(false) // stopping: no register any more
	}
}

func (s *Service) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Service) isServing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving
}

// standDown takes this instance out of service because another one holds
// the node id (its record replaced ours, or the catalog answered 409 to a
// registration of an instance not serving), until a registration of ours
// succeeds again: its micro service stops, so every dispatch and probe on
// the node's subjects reaches the holder (micro's queue group would give this one a share,
// answered draining, which with no other node to try is a 503), its
// heartbeats stop, and requests it accepted run on (the routers that
// placed them take them over with a targeted cancel when the record
// changes, DESIGN §4 step 8). Two agents started with one node id would
// otherwise both serve it, one under the other's record.
func (s *Service) standDown(holder string) {
	s.mu.Lock()
	was := s.serving && !s.draining
	s.serving = false
	s.mu.Unlock()
	s.microMu.Lock()
	s.stopEndpointsLocked()
	s.microMu.Unlock()
	if was {
		s.log.Warn().Str("holder", holder).
			Msg("node id taken over by another instance: standing down (off the node's subjects, no heartbeats) until it falls silent")
	}
}

// serve puts this instance in service: a registration of ours succeeded.
// Its micro service starts again if a stand-down stopped it: routers place
// nothing on the node before its heartbeats (which start after this) make
// health see it live again, so none finds the subjects empty meanwhile.
func (s *Service) serve() error {
	started, err := s.startMicro()
	if err != nil {
		return err
	}
	if started {
		// the server has the subscriptions before anyone is told
		if err := s.nc.FlushTimeout(s.cfg.RegisterTimeout); err != nil {
			return fmt.Errorf("node %s: flush subscriptions: %w", s.cfg.NodeID, err)
		}
	}
	s.mu.Lock()
	was := s.serving
	s.serving = true
	s.mu.Unlock()
	if !was && s.registered {
		s.log.Info().Msg("node id held again: serving")
	}
	return nil
}

// heartbeat is the node's load report as it is now.
func (s *Service) heartbeat() record.Heartbeat {
	var gpu float64
	if s.cfg.GPUUtilization != nil {
		gpu = s.cfg.GPUUtilization()
	}
	now := time.Now()
	server := s.load.current(now) // nil unless scraped and fresh
	s.mu.Lock()
	defer s.mu.Unlock()
	return record.Heartbeat{NodeID: s.cfg.NodeID, InstanceID: s.instance, Time: now.UTC(),
		InFlight: s.active, QueueDepth: s.waiting, MaxConcurrency: s.cfg.MaxConcurrency,
		GPUUtilization: gpu, ThroughputTPS: s.tps, Draining: s.draining, ActiveStreams: s.streamsLocked(), Server: server}
}

func (s *Service) publishHeartbeat() {
	if s.nc.IsClosed() || !s.isServing() {
		return // a stood-down instance is silent: its successor's heartbeats are the node's
	}
	if err := wire.PublishJSON(s.nc, s.cfg.Subjects.Heartbeat(s.cfg.NodeID), s.heartbeat()); err != nil {
		s.log.Debug().Err(err).Msg("publish heartbeat")
	}
}

// streamsLocked counts the streamed requests in flight. Caller holds s.mu.
func (s *Service) streamsLocked() int {
	n := 0
	for _, js := range s.jobs {
		for _, j := range js {
			if j.call.Stream {
				n++
			}
		}
	}
	return n
}
