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
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// Subscription buffers: every instance sees every heartbeat (10,000 nodes
// beat once a second), so a burst must queue rather than be dropped.
const (
	pendingMsgs  = 1 << 20
	pendingBytes = 256 << 20
)

// startFlushTimeout bounds the flush that makes the endpoints known before
// Start returns; the caller's ctx may have no deadline.
const startFlushTimeout = 10 * time.Second

// badLogEvery is the most often a line about undecodable input is logged.
const badLogEvery = time.Second

var _ servicecmd.Service = (*Service)(nil)

// Service is one health instance. Several may run side by side: each sees
// every event (plain subscriptions) and writes fed_health with
// revision-checked updates (writer.go).
type Service struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger
	// badMsgs rate-limits the log of undecodable events, badRecords that of
	// undecodable bucket values: peers must not be able to flood the log.
	badMsgs    *logging.Limited
	badRecords zerolog.Logger

	life  lifecycle.Guard
	group *lifecycle.Group // every goroutine: loop, catalog watch, probes

	health  jetstream.KeyValue
	catalog jetstream.KeyValue

	mu    sync.Mutex
	nodes map[string]*node
	mesh  meshStats
	peer  peerStats // the stored stats (statsync.go)

	urgent chan struct{} // wakes the writer for a state/circuit change
	probes chan struct{} // semaphore bounding probes in flight
	subs   []*nats.Subscription
	svc    micro.Service
	lag    metrics.WatchLag // fedmesh_kv_watch_lag_seconds of the fed_catalog watch (metrics.go)

	// instance names this process in its fed.health.stats events;
	// pubFail rate-limits the log of failed publishes.
	instance string
	pubFail  zerolog.Logger
}

// New fills cfg's zero fields with the defaults, validates it and returns a
// service that is not running yet.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("health: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{
		nc:         nc,
		cfg:        cfg,
		log:        log,
		badMsgs:    logging.NewLimited(badLogEvery),
		badRecords: log.Sample(&zerolog.BurstSampler{Burst: 1, Period: badLogEvery}),
		instance:   nuid.Next(),
		pubFail:    log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 10 * time.Second}),
		group:      lifecycle.NewGroup(),
		nodes:      map[string]*node{},
		mesh:       newMeshStats(cfg.LatencyWindow),
		peer:       newPeerStats(),
		urgent:     make(chan struct{}, 1),
		probes:     make(chan struct{}, cfg.WriteConcurrency),
	}, nil
}

// Start opens the buckets, loads fed_health and fed_catalog, subscribes to
// heartbeats, outcomes and unplaced events, starts the timer loop and the
// micro service. It returns once all of that is up; on an error nothing is
// left running.
func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop stops the micro service and the subscriptions, then every goroutine
// the service started (the timer loop writes what is pending first), and
// waits for them. It is idempotent.
func (s *Service) Stop() error { return s.life.Stop(s.stop) }

func (s *Service) start(ctx context.Context) error {
	set, err := buckets.EnsureConn(ctx, s.nc, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	s.health, s.catalog = set.Health, set.Catalog

	now := time.Now()
	seed := func(e jetstream.KeyValueEntry) { s.seedFrom(e, now) }
	if err := buckets.Load(ctx, s.health, seed, jetstream.IgnoreDeletes()); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if err := buckets.Follow(ctx, s.group, s.catalog, s.lag.Wrap(s.applyCatalog)); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	// After the nodes are known (their stats are seeded), before any event
	// is counted.
	if err := s.followStats(ctx); err != nil {
		return err
	}
	if err := s.subscribe(); err != nil {
		return err
	}
	if !s.group.Go(s.loop) {
		return fmt.Errorf("health: start timer loop: %w", lifecycle.ErrStopped)
	}
	if err := s.addMicro(); err != nil {
		return err
	}
	// The server must know the endpoints before Start says "ready".
	fctx, cancelFlush := context.WithTimeout(ctx, startFlushTimeout)
	defer cancelFlush()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("health: flush endpoints: %w", err)
	}
	s.log.Info().Dur("heartbeat_interval", s.cfg.HeartbeatInterval).Dur("check_interval", s.cfg.CheckInterval).
		Dur("reset_timeout", s.cfg.ResetTimeout).Int("nodes", s.nodeCount()).Msg("health started")
	return nil
}

// subscribe listens to heartbeats, outcomes and unplaced events.
func (s *Service) subscribe() error {
	sp := s.cfg.Subjects
	for _, sub := range []struct {
		subj string
		h    nats.MsgHandler
	}{
		{sp.HeartbeatAll(), onEvent(s, record.DecodeHeartbeat, s.applyHeartbeat)},
		// each publisher on its own subject, each subject one kind: a node
		// cannot report a dispatch failure, a client no completion
		{sp.OutcomeAll(), onOutcomes(s, record.OutcomeCompleted, record.OutcomeProbe)}, // one outcome or a batch
		{sp.RouterFailedAll(), onEvent(s, outcomeOf(record.OutcomeDispatchFailed), s.applyOutcome)},
		{sp.ClientDuplicateAll(), onEvent(s, outcomeOf(record.OutcomeDuplicate), s.applyOutcome)},
		{sp.Unplaced(), onEvent(s, decodeUnplaced, s.applyUnplaced)},
	} {
		// Plain subscriptions, not a queue group: every instance must see
		// every event to judge every node.
		ns, err := s.nc.Subscribe(sub.subj, sub.h)
		if err != nil {
			return fmt.Errorf("health: subscribe %s: %w", sub.subj, err)
		}
		s.subs = append(s.subs, ns)
		if err := ns.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			return fmt.Errorf("health: pending limits of %s: %w", sub.subj, err)
		}
	}
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
	s.svc = svc
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

// stop undoes whatever start did, in order: no more requests, no more
// events, then the goroutines (the loop flushes on its way out).
func (s *Service) stop() error {
	var errs []error
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("health: stop micro service: %w", err))
		}
	}
	for _, sub := range s.subs {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("health: unsubscribe %s: %w", sub.Subject, err))
		}
	}
	s.group.Stop()
	return errors.Join(errs...)
}

// node returns the node id, creating it. Runs under mu.
func (s *Service) node(id string, now time.Time) *node {
	n := s.nodes[id]
	if n == nil {
		n = newNode(id, s.cfg.LatencyWindow, s.cfg.ModelWindow, now)
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
