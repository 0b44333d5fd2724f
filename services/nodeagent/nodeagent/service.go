package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// Service is one running node agent.
type Service struct {
	nc       *nats.Conn
	cfg      Config
	log      zerolog.Logger
	instance string

	mu       sync.Mutex
	jobs     map[string][]*job // in flight, by request id
	early    earlyCancels      // cancels that arrived before their dispatch
	active   int               // len of all jobs
	waiting  int               // accepted jobs without a first token yet
	draining bool
	started  bool
	stopped  bool
	tps      float64 // EWMA of per-request tokens/s

	svc       micro.Service
	cancelSub *nats.Subscription
	loopCtx   context.Context // ends the heartbeat loop
	stopLoops context.CancelFunc
	loops     sync.WaitGroup // heartbeat loop and re-registration
	// reregistering: a register after a reconnect is running.
	reregistering atomic.Bool
	work          sync.WaitGroup // one per job goroutine
	idle          chan struct{}  // closed and replaced when active drops to 0 while draining
}

// New validates cfg and builds a Service; Start runs it.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("nodeagent: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nodeagent %s: invalid config: %w", cfg.NodeID, err)
	}
	inst := cfg.InstanceID
	if inst == "" {
		inst = nuid.Next()
	}
	loopCtx, stopLoops := context.WithCancel(context.Background())
	return &Service{
		nc: nc, cfg: cfg, instance: inst,
		log:     log.With().Str("node", cfg.NodeID).Logger(),
		jobs:    map[string][]*job{},
		idle:    make(chan struct{}),
		loopCtx: loopCtx, stopLoops: stopLoops,
	}, nil
}

// InstanceID is the id this process registered with.
func (s *Service) InstanceID() string { return s.instance }

// Start subscribes to cancels, starts the fed-node micro service (infer and
// probe endpoints), registers with the catalog (retrying until a catalog
// answers or ctx ends) and starts heartbeats. It returns once the node is
// registered and serving.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return fmt.Errorf("nodeagent %s: already started", s.cfg.NodeID)
	}
	s.started = true
	s.mu.Unlock()

	// Cancels first, so no accepted request can miss its cancel.
	sub, err := s.nc.Subscribe(s.cfg.Subjects.Cancel(">"), s.onCancel)
	if err != nil {
		s.markFailed()
		return fmt.Errorf("nodeagent %s: subscribe to cancels: %w", s.cfg.NodeID, err)
	}
	s.cancelSub = sub
	if err := s.startMicro(); err != nil {
		s.markFailed()
		_ = sub.Unsubscribe()
		return err
	}
	if err := s.nc.Flush(); err != nil {
		s.markFailed()
		s.stopMicro()
		return fmt.Errorf("nodeagent %s: flush subscriptions: %w", s.cfg.NodeID, err)
	}
	// Heartbeats before registration: the catalog judges liveness by them,
	// and health learns the node's load as soon as routers can pick it.
	s.loops.Add(1)
	go s.heartbeatLoop(s.loopCtx)

	if err := s.register(ctx); err != nil {
		s.markFailed()
		s.stopLoops()
		s.loops.Wait()
		s.stopMicro()
		return err
	}
	s.log.Info().Str("subject", s.cfg.Subjects.NodeInfer(s.cfg.NodeID)).Str("backend", s.cfg.Backend.Name()).
		Int("max_concurrency", s.cfg.MaxConcurrency).Msg("node agent serving")
	return nil
}

// markFailed makes Stop a no-op after a failed Start: nothing was
// registered and Start undoes what it had set up. A request that arrived
// before the failure is cut.
func (s *Service) markFailed() {
	s.mu.Lock()
	s.stopped, s.draining = true, true
	s.mu.Unlock()
	s.cutAll()
	s.work.Wait()
}

func (s *Service) stopMicro() {
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			s.log.Debug().Err(err).Msg("stop micro service")
		}
	}
	if s.cancelSub != nil {
		_ = s.cancelSub.Unsubscribe()
	}
}

// Stop drains the node: new work is answered draining, requests in flight
// get up to DrainTimeout to finish (then they are cut with a final error),
// the node deregisters, heartbeats stop and the micro service stops. On a
// closed connection nothing can reach the client any more, so in-flight
// requests are cut at once and Stop returns promptly.
func (s *Service) Stop() error {
	s.mu.Lock()
	if s.stopped || !s.started {
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.draining = true
	s.mu.Unlock()
	s.log.Info().Msg("draining")
	s.publishHeartbeat() // tell health at once, not at the next tick

	if s.nc.IsClosed() {
		s.cutAll()
	} else if !s.waitIdle(s.cfg.DrainTimeout) {
		s.log.Warn().Dur("drain_timeout", s.cfg.DrainTimeout).Msg("drain timeout: cutting requests in flight")
		s.cutAll()
	}
	s.work.Wait()

	// Heartbeats stop before the deregister, so no late heartbeat makes the
	// catalog think the node is still alive after its record is gone.
	s.stopLoops()
	s.loops.Wait()
	var errs []error
	if !s.nc.IsClosed() {
		if err := s.deregister(); err != nil {
			errs = append(errs, err)
		}
	}
	s.stopMicro()
	if !s.nc.IsClosed() {
		_ = s.nc.FlushTimeout(time.Second)
	}
	s.log.Info().Msg("node agent stopped")
	return errors.Join(errs...)
}

// waitIdle waits until no request is in flight, or d passes.
func (s *Service) waitIdle(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		if s.active == 0 {
			s.mu.Unlock()
			return true
		}
		idle := s.idle
		s.mu.Unlock()
		select {
		case <-idle:
		case <-t.C:
			return false
		}
	}
}

// cutAll cancels every request in flight because the node is going away.
func (s *Service) cutAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, js := range s.jobs {
		for _, j := range js {
			j.cancel(errDrained)
		}
	}
}
