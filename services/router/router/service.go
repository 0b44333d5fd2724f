package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Service is one router instance. Run as many as needed: they share the
// infer subjects through queue group fed-router and keep no durable state.
type Service struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger

	cache  *cache
	policy atomic.Pointer[policyState]
	limits *tenantLimits
	out    *outstanding
	mw     []Middleware
	rr     atomic.Uint64 // round-robin tickets
	sem    chan struct{} // MaxInFlight slots

	stats routerStats

	mu      sync.Mutex
	started bool
	stopped bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // watchers, sweeper
	reqWG   sync.WaitGroup // request goroutines
	// gate orders reqWG.Add (handlers) before reqWG.Wait (Stop): micro drains
	// its subscriptions asynchronously, so handlers can still run after
	// svc.Stop returns.
	gate    sync.RWMutex
	closing bool
	svc     micro.Service
	outSub  *nats.Subscription
}

// routerStats are the counters in `nats micro stats fed-router`.
type routerStats struct {
	requests, placed, unplaced, retries, rejected atomic.Int64
}

// New validates cfg and builds a router; Start makes it serve.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("router: nil NATS connection")
	}
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = nuid.Next()
	}
	s := &Service{nc: nc, cfg: cfg, log: log.With().Str("router", cfg.InstanceID).Logger(),
		cache: newCache(), limits: newTenantLimits(), out: newOutstanding(),
		sem: make(chan struct{}, cfg.MaxInFlight)}
	s.policy.Store(newPolicyState(cfg.Policy))
	s.mw = append([]Middleware{logMiddleware{s.log}, limitMiddleware{s.limits}}, cfg.Middleware...)
	return s, nil
}

// Start loads fed_catalog, fed_health and fed_config into memory, keeps
// watching them, and registers micro service fed-router. It returns once the
// initial values are loaded and the endpoints are subscribed.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("router: already started")
	}
	s.started = true
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.start(ctx); err != nil {
		s.stopLocked()
		return err
	}
	return nil
}

func (s *Service) start(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("router: jetstream: %w", err)
	}
	set, err := buckets.Ensure(ctx, js, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	// config first, so the catalog is judged with the configured regions
	for _, w := range []struct {
		kv    jetstream.KeyValue
		apply func(jetstream.KeyValueEntry)
	}{{set.Config, s.applyConfig}, {set.Catalog, s.applyCatalog}, {set.Health, s.applyHealth}} {
		ready := make(chan struct{})
		if err := s.watch(w.kv, w.apply, ready); err != nil {
			return fmt.Errorf("router: %w", err)
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("router: loading bucket %s: %w", w.kv.Bucket(), ctx.Err())
		}
	}
	if s.outSub, err = s.nc.Subscribe(s.cfg.Subjects.OutcomeAll(), s.onOutcome); err != nil {
		return fmt.Errorf("router: subscribe outcomes: %w", err)
	}
	s.wg.Add(1)
	go s.sweepLoop()

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceRouter,
		Version:     Version,
		Description: "fedmesh router: places inference requests on nodes",
		QueueGroup:  subject.QueueRouter,
		Metadata:    map[string]string{"instance": s.cfg.InstanceID, "region": s.cfg.Region},
		StatsHandler: func(*micro.Endpoint) any {
			return s.Stats()
		},
	})
	if err != nil {
		return fmt.Errorf("router: add micro service: %w", err)
	}
	s.svc = svc
	if err := svc.AddEndpoint("infer", micro.HandlerFunc(s.handleInfer),
		micro.WithEndpointSubject(s.cfg.Subjects.InferAll()),
		micro.WithEndpointQueueGroup(subject.QueueRouter)); err != nil {
		return fmt.Errorf("router: add endpoint infer: %w", err)
	}
	if err := svc.AddEndpoint("candidates", micro.HandlerFunc(s.handleCandidates),
		micro.WithEndpointSubject(s.cfg.Subjects.RouterCandidates()),
		micro.WithEndpointQueueGroup(subject.QueueRouter)); err != nil {
		return fmt.Errorf("router: add endpoint candidates: %w", err)
	}
	// a round trip, so the server has our subscriptions when Start returns
	// FlushWithContext needs a deadline; the caller's ctx may have none.
	fctx, cancelFlush := context.WithTimeout(ctx, 10*time.Second)
	defer cancelFlush()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("router: flush subscriptions: %w", err)
	}
	s.log.Info().Int("nodes", s.cache.nodeCount()).Str("strategy", s.policy.Load().Strategy).Msg("router started")
	return nil
}

// Stop stops taking requests, lets the ones being placed finish (up to
// Config.StopTimeout, then cancels them), and stops every goroutine.
func (s *Service) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Service) stopLocked() error {
	if !s.started || s.stopped {
		return nil
	}
	s.stopped = true
	var errs []error
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("router: stop micro service: %w", err))
		}
	}
	s.gate.Lock()
	s.closing = true
	s.gate.Unlock()
	done := make(chan struct{})
	go func() { s.reqWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.StopTimeout):
		s.log.Warn().Msg("router stop: cancelling requests still being placed")
	}
	s.cancel()
	<-done
	if s.outSub != nil {
		if err := s.outSub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("router: unsubscribe outcomes: %w", err))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Stats is what the micro stats endpoint reports for each endpoint.
type Stats struct {
	Nodes       int    `json:"nodes"` // nodes in the catalog cache
	InFlight    int    `json:"in_flight"`
	Outstanding int    `json:"outstanding"` // accepted dispatches not yet completed
	Requests    int64  `json:"requests"`
	Placed      int64  `json:"placed"`
	Unplaced    int64  `json:"unplaced"`
	Retries     int64  `json:"retries"`
	Rejected    int64  `json:"rejected_overload"`
	Strategy    string `json:"strategy"`
}

// Stats returns the router's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Nodes:       s.cache.nodeCount(),
		InFlight:    len(s.sem),
		Outstanding: s.out.len(),
		Requests:    s.stats.requests.Load(),
		Placed:      s.stats.placed.Load(),
		Unplaced:    s.stats.unplaced.Load(),
		Retries:     s.stats.retries.Load(),
		Rejected:    s.stats.rejected.Load(),
		Strategy:    s.policy.Load().Strategy,
	}
}

// track registers a request goroutine; false once the service is stopping.
func (s *Service) track() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closing {
		return false
	}
	s.reqWG.Add(1)
	return true
}
