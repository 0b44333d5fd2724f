// Package catalog is fedmesh's catalog service (DESIGN §1, §5): the only
// writer of KV fed_catalog, serving the micro service fed-catalog.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
)

// dropLogInterval is how often, at most, a dropped heartbeat or record is logged.
const dropLogInterval = time.Second

var _ servicecmd.Service = (*Service)(nil)

// Service is one catalog instance. Several may run side by side: writes are
// revision-checked and queries answer from each instance's watch cache.
type Service struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger

	life  lifecycle.Guard
	group *lifecycle.Group

	kv            jetstream.KeyValue
	cache         *cache
	live          *liveness
	badHeartbeats *logging.Limited
	badRecords    *logging.Limited
	started       time.Time

	jobs  chan func(context.Context)
	svc   micro.Service
	hbSub *nats.Subscription
}

// New fills cfg's zero fields with defaults, validates it and returns a
// service that is not running yet.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("catalog: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{
		nc:            nc,
		cfg:           cfg,
		log:           log,
		group:         lifecycle.NewGroup(),
		cache:         newCache(),
		live:          newLiveness(),
		badHeartbeats: logging.NewLimited(dropLogInterval),
		badRecords:    logging.NewLimited(dropLogInterval),
		jobs:          make(chan func(context.Context), cfg.Workers*jobsPerWorker),
	}, nil
}

// Start opens fed_catalog, loads it into the cache, subscribes to heartbeats
// and registers the micro endpoints. It returns once the service answers;
// a second Start is refused.
func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop stops the micro service and the heartbeat subscription, then every
// goroutine the service started, and waits for them. It is idempotent.
func (s *Service) Stop() error { return s.life.Stop(s.stop) }

func (s *Service) start(ctx context.Context) error {
	set, err := buckets.EnsureConn(ctx, s.nc, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	s.kv = set.Catalog
	s.started = time.Now()

	if s.hbSub, err = s.nc.Subscribe(s.cfg.Subjects.HeartbeatAll(), s.onHeartbeat); err != nil {
		return fmt.Errorf("catalog: subscribe heartbeats: %w", err)
	}
	if err := buckets.Follow(ctx, s.group, s.kv, s.applyRecord); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	// Go only refuses once Stop began, and Stop waits for start to return.
	for range s.cfg.Workers {
		s.group.Go(s.worker)
	}
	s.group.Every(s.cfg.SweepInterval, s.sweep)

	if err := s.addMicro(); err != nil {
		return err
	}
	s.log.Info().Dur("node_ttl", s.cfg.NodeTTL).Str("prefix", s.cfg.Subjects.InferPrefix()).Msg("catalog started")
	return nil
}

// stop undoes whatever start did; it also runs after a failed start.
func (s *Service) stop() error {
	var errs []error
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("catalog: stop micro service: %w", err))
		}
	}
	if s.hbSub != nil {
		if err := s.hbSub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("catalog: unsubscribe heartbeats: %w", err))
		}
	}
	// Cancelling the group also ends the fed_catalog watch.
	s.group.Stop()
	return errors.Join(errs...)
}

func (s *Service) addMicro() error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceCatalog,
		Version:     Version,
		Description: "fedmesh catalog: which models run on which node",
		QueueGroup:  subject.QueueCatalog,
	})
	if err != nil {
		return fmt.Errorf("catalog: add micro service: %w", err)
	}
	s.svc = svc
	sp := s.cfg.Subjects
	eps := []struct {
		name, subj string
		h          micro.HandlerFunc
	}{
		{"register", sp.CatalogRegister(), s.offload(s.handleRegister)},
		{"deregister", sp.CatalogDeregister(), s.offload(s.handleDeregister)},
		// the bound forms a node credential allows (DESIGN §10.1, §13)
		{"register-bound", sp.CatalogRegisterBound(), s.offload(s.handleRegister)},
		{"deregister-bound", sp.CatalogDeregisterBound(), s.offload(s.handleDeregister)},
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
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.jobs:
			job(ctx)
		}
	}
}

// applyRecord folds one fed_catalog watch entry into the cache. A record
// that does not decode is left out (no query could use it) and logged
// rate-limited, so a bad writer cannot flood the log.
func (s *Service) applyRecord(e jetstream.KeyValueEntry) {
	if err := s.cache.apply(e); err != nil {
		s.badRecords.DroppedMessage(&s.log, fmt.Errorf("revision %d: %w", e.Revision(), err), "$KV."+e.Bucket()+"."+e.Key())
	}
}

// respondErr sends err as an error reply: its wire code, or 500. It publishes
// the reply itself (wire.RespondError) because register and deregister answer
// from a worker goroutine, where micro.Request.Error would race with micro's
// own bookkeeping.
func (s *Service) respondErr(req micro.Request, err error) {
	if wire.CodeOf(err) >= 500 {
		s.log.Error().Err(err).Str(logging.KeySubject, req.Subject()).Msg("catalog request failed")
	}
	if perr := wire.RespondError(s.nc, req.Reply(), err); perr != nil {
		s.log.Warn().Err(perr).Str(logging.KeySubject, req.Subject()).Msg("reply failed")
	}
}

// decodeRequest unmarshals an endpoint's JSON body and checks it. Either
// failure is a 400: a malformed body names the endpoint, a bad value its field.
func decodeRequest[T any](data []byte, endpoint string, check func(*T) error) (T, error) {
	var r T
	if err := json.Unmarshal(data, &r); err != nil {
		return r, wire.Errorf(wire.CodeBadRequest, "malformed %s body: %v", endpoint, err)
	}
	if err := check(&r); err != nil {
		return r, wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	return r, nil
}
