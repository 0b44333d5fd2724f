// Package health is fedmesh's health service (DESIGN §1, §5–§7): it turns
// heartbeats and outcome events into per-node state, latency percentiles and
// a circuit breaker in KV fed_health, and serves fed.health.get/list and
// fed.stats as the micro service fed-health.
package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
)

// Service is one health instance. Several may run side by side: each sees
// every event (plain subscriptions) and writes fed_health with
// revision-checked updates (writer.go).
type Service struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger

	health  jetstream.KeyValue
	catalog jetstream.KeyValue
	badMsgs *logging.Limited

	mu    sync.Mutex
	nodes map[string]*node
	mesh  meshStats

	urgent  chan struct{} // wakes the writer for a state/circuit change
	probes  chan struct{} // semaphore bounding probes in flight
	subs    []*nats.Subscription
	svc     micro.Service
	watcher jetstream.KeyWatcher
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	lifeMu  sync.Mutex
	started bool
	stopped bool
}

// New validates cfg and returns a service that is not running yet.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("health: nil NATS connection")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{
		nc:      nc,
		cfg:     cfg,
		log:     log,
		badMsgs: logging.NewLimited(time.Second),
		nodes:   map[string]*node{},
		mesh:    newMeshStats(cfg.LatencyWindow),
		urgent:  make(chan struct{}, 1),
		probes:  make(chan struct{}, cfg.WriteConcurrency),
	}, nil
}

// Start opens the buckets, loads fed_health and fed_catalog, subscribes to
// heartbeats, outcomes and unplaced events, starts the timer loop and the
// micro service. It returns once all of that is up.
func (s *Service) Start(ctx context.Context) error {
	s.lifeMu.Lock()
	if s.started || s.stopped {
		s.lifeMu.Unlock()
		return errors.New("health: Start called twice or after Stop")
	}
	s.started = true
	s.lifeMu.Unlock()

	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("health: jetstream: %w", err)
	}
	set, err := buckets.Ensure(ctx, js, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	s.health, s.catalog = set.Health, set.Catalog

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop()
		}
	}()

	if err := s.loadHealth(ctx); err != nil {
		return err
	}
	if err := s.watchCatalog(ctx, runCtx); err != nil {
		return err
	}
	sp := s.cfg.Subjects
	for _, sub := range []struct {
		subj string
		h    nats.MsgHandler
	}{
		{sp.HeartbeatAll(), s.onHeartbeat},
		{sp.OutcomeAll(), s.onOutcome},
		{sp.Unplaced(), s.onUnplaced},
	} {
		// Plain subscriptions, not a queue group: every instance must see
		// every event to judge every node.
		ns, err := s.nc.Subscribe(sub.subj, sub.h)
		if err != nil {
			return fmt.Errorf("health: subscribe %s: %w", sub.subj, err)
		}
		_ = ns.SetPendingLimits(1<<20, 256<<20)
		s.subs = append(s.subs, ns)
	}

	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.loop(runCtx) }()

	if err := s.addMicro(); err != nil {
		return err
	}
	// The server must know the endpoints before Start says "ready".
	// FlushWithContext needs a deadline; the caller's ctx may have none.
	fctx, cancelFlush := context.WithTimeout(ctx, 10*time.Second)
	defer cancelFlush()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("health: flush endpoints: %w", err)
	}
	ok = true
	s.log.Info().Dur("heartbeat_interval", s.cfg.HeartbeatInterval).Dur("check_interval", s.cfg.CheckInterval).
		Dur("reset_timeout", s.cfg.ResetTimeout).Int("nodes", s.nodeCount()).Msg("health started")
	return nil
}

func (s *Service) nodeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes)
}

func (s *Service) addMicro() error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceHealth,
		Version:     Version,
		Description: "fedmesh health: node state, latency, circuit breakers, stats",
		// Every instance holds the same view, so any one may answer.
		QueueGroup: subject.QueueHealth,
	})
	if err != nil {
		return fmt.Errorf("health: add micro service: %w", err)
	}
	s.lifeMu.Lock()
	s.svc = svc
	s.lifeMu.Unlock()
	sp := s.cfg.Subjects
	eps := []struct {
		name, subj string
		h          micro.HandlerFunc
	}{
		{"get", sp.HealthGet(), s.handleGet},
		{"list", sp.HealthList(), s.handleList},
		{"stats", sp.Stats(), s.handleStats},
	}
	for _, e := range eps {
		if err := svc.AddEndpoint(e.name, e.h, micro.WithEndpointSubject(e.subj)); err != nil {
			return fmt.Errorf("health: add endpoint %s: %w", e.name, err)
		}
	}
	return nil
}

// Stop stops the micro service and the subscriptions, then every goroutine
// the service started (the timer loop writes what is pending first), and
// waits for them.
func (s *Service) Stop() error {
	s.lifeMu.Lock()
	if s.stopped {
		s.lifeMu.Unlock()
		return nil
	}
	s.stopped = true
	svc := s.svc
	s.lifeMu.Unlock()

	var errs []error
	if svc != nil {
		if err := svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("health: stop micro service: %w", err))
		}
	}
	for _, sub := range s.subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("health: unsubscribe %s: %w", sub.Subject, err))
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.watcher != nil {
		_ = s.watcher.Stop()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// node returns the node id, creating it. Runs under mu.
func (s *Service) node(id string, now time.Time) *node {
	n := s.nodes[id]
	if n == nil {
		n = newNode(id, s.cfg.LatencyWindow, now)
		s.nodes[id] = n
	}
	return n
}

// wake asks the writer to flush now (an urgent change happened).
func (s *Service) wake() {
	select {
	case s.urgent <- struct{}{}:
	default:
	}
}
