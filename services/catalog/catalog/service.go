// Package catalog is fedmesh's catalog service (DESIGN §1, §5): the only
// writer of KV fed_catalog, serving the micro service fed-catalog.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
)

// Service is one catalog instance. Several may run side by side: writes are
// revision-checked and queries answer from each instance's watch cache.
type Service struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger

	kv      jetstream.KeyValue
	cache   *cache
	live    *liveness
	badMsgs *logging.Limited
	started time.Time

	jobs    chan func(context.Context)
	svc     micro.Service
	hbSub   *nats.Subscription
	watcher jetstream.KeyWatcher
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	stopped bool
}

// New validates cfg and returns a service that is not running yet.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("catalog: nil NATS connection")
	}
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	return &Service{
		nc:      nc,
		cfg:     cfg,
		log:     log,
		cache:   newCache(),
		live:    newLiveness(),
		badMsgs: logging.NewLimited(time.Second),
		jobs:    make(chan func(context.Context), cfg.Workers*64),
	}, nil
}

// Start opens fed_catalog, loads it into the cache, subscribes to heartbeats
// and registers the micro endpoints. It returns once the service answers.
func (s *Service) Start(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("catalog: jetstream: %w", err)
	}
	set, err := buckets.Ensure(ctx, js, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	s.kv = set.Catalog
	s.started = time.Now()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop()
		}
	}()

	if s.hbSub, err = s.nc.Subscribe(s.cfg.Subjects.HeartbeatAll(), s.onHeartbeat); err != nil {
		return fmt.Errorf("catalog: subscribe heartbeats: %w", err)
	}
	if s.watcher, err = s.kv.WatchAll(runCtx); err != nil {
		return fmt.Errorf("catalog: watch %s: %w", buckets.Catalog, err)
	}
	loaded := make(chan struct{})
	s.wg.Add(1)
	go s.watchLoop(loaded)
	select {
	case <-loaded:
	case <-ctx.Done():
		return fmt.Errorf("catalog: loading %s: %w", buckets.Catalog, ctx.Err())
	}

	for range s.cfg.Workers {
		s.wg.Add(1)
		go s.worker(runCtx)
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.sweepLoop(runCtx) }()

	if err := s.addMicro(runCtx); err != nil {
		return err
	}
	ok = true
	s.log.Info().Dur("node_ttl", s.cfg.NodeTTL).Str("prefix", s.cfg.Subjects.InferPrefix()).Msg("catalog started")
	return nil
}

func (s *Service) addMicro(ctx context.Context) error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceCatalog,
		Version:     Version,
		Description: "fedmesh catalog: which models run on which node",
		QueueGroup:  subject.QueueCatalog,
	})
	if err != nil {
		return fmt.Errorf("catalog: add micro service: %w", err)
	}
	s.mu.Lock()
	s.svc = svc
	s.mu.Unlock()
	sp := s.cfg.Subjects
	eps := []struct {
		name, subj string
		h          micro.HandlerFunc
	}{
		{"register", sp.CatalogRegister(), s.offload(s.handleRegister)},
		{"deregister", sp.CatalogDeregister(), s.offload(s.handleDeregister)},
		{"find", sp.CatalogFind(), s.handleFind},
		{"list", sp.CatalogList(), s.handleList},
		{"get", sp.CatalogGet(), s.handleGet},
	}
	for _, e := range eps {
		if err := svc.AddEndpoint(e.name, e.h, micro.WithEndpointSubject(e.subj)); err != nil {
			return fmt.Errorf("catalog: add endpoint %s: %w", e.name, err)
		}
	}
	return nil
}

// offload runs a KV-writing handler on the worker pool so one slow write
// does not serialise the endpoint's subscription.
func (s *Service) offload(h func(context.Context, micro.Request)) micro.HandlerFunc {
	return func(req micro.Request) {
		select {
		case s.jobs <- func(ctx context.Context) { h(ctx, req) }:
		default:
			s.respondErr(req, wire.Errorf(wire.CodeNoCapacity, "catalog is overloaded, try again"))
		}
	}
}

func (s *Service) worker(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.jobs:
			job(ctx)
		}
	}
}

func (s *Service) watchLoop(loaded chan struct{}) {
	defer s.wg.Done()
	initial := true
	for e := range s.watcher.Updates() {
		if e == nil {
			if initial {
				initial = false
				close(loaded)
			}
			continue
		}
		if !s.cache.apply(e) {
			s.log.Warn().Str("key", e.Key()).Uint64("revision", e.Revision()).Msg("undecodable catalog record ignored")
		}
	}
}

// respondErr sends err as an error reply: its wire code, or 500. It publishes
// the reply itself (wire.RespondError) because register and deregister answer
// from a worker goroutine, where micro.Request.Error would race with micro's
// own bookkeeping.
func (s *Service) respondErr(req micro.Request, err error) {
	if wire.CodeOf(err) >= 500 {
		s.log.Error().Err(err).Str("subject", req.Subject()).Msg("catalog request failed")
	}
	if perr := wire.RespondError(s.nc, req.Reply(), err); perr != nil {
		s.log.Warn().Err(perr).Str("subject", req.Subject()).Msg("reply failed")
	}
}

// Stop stops the micro service and the heartbeat subscription, then every
// goroutine the service started, and waits for them.
func (s *Service) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	svc := s.svc
	s.mu.Unlock()

	var errs []error
	if svc != nil {
		if err := svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("catalog: stop micro service: %w", err))
		}
	}
	if s.hbSub != nil {
		if err := s.hbSub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("catalog: unsubscribe heartbeats: %w", err))
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
