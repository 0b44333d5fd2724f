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

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

var _ servicecmd.Service = (*Service)(nil)

// Service is one running node agent.
type Service struct {
	nc       *nats.Conn
	cfg      Config
	log      zerolog.Logger
	instance string
	life     lifecycle.Guard

	mu       sync.Mutex
	jobs     map[string][]*job // in flight, by request id
	early    earlyCancels      // cancels that arrived before their dispatch
	active   int               // len of all jobs
	waiting  int               // accepted jobs without a first token yet
	draining bool
	// serving: this instance holds the node id: its registration succeeded
	// and no other instance has taken the id over since (standDown). While
	// not serving no heartbeat goes out, dispatches and probes are answered
	// draining, and once another instance is known to hold the id the
	// micro service is down (a restarted agent waiting out its previous
	// instance could otherwise take requests routed by that instance's
	// record, which routers then count as lost with it once this one's
	// record replaces it; an instance whose id was taken over would serve
	// beside its successor, under a record that is not its own).
	serving bool
	tps     float64 // EWMA of per-request tokens/s

	replay *replays // streams' messages kept for fed.node.<id>.replay
	// answered: requests whose final went out lately, for fed.node.<id>.status
	answered *answeredIDs
	load     *scraper      // the model server's own load (scrape.go); nil: not scraped
	blobs    *blobs.Opener // fed_blobs, opened on the first out-of-band body or answer (blob.go)

	// microMu guards svc, the fed-node micro service: up while this
	// instance holds the node id (and before its first registration), down
	// while it stands down (standDown), closed for good by stop.
	microMu     sync.Mutex
	svc         micro.Service
	microClosed bool
	// dispatchedBefore: dispatches counted by micro services stopped by a
	// stand-down (the metric counts on across them)
	dispatchedBefore float64
	cancelSub        *nats.Subscription
	heldSub          *nats.Subscription // fed.held.* (DESIGN §3.8)
	// registered: start's registration succeeded, so stop drains and
	// deregisters; after a failed start there is nothing to take back.
	registered bool
	loops      *lifecycle.Group // heartbeat loop and re-registration
	work       *lifecycle.Group // one goroutine per accepted job
	// reregistering: a register after a reconnect or a lost catalog
	// record is running; reregWanted: one more is asked for.
	reregistering atomic.Bool
	reregWanted   atomic.Bool
	// recordSeen: the watch of the node's catalog record saw it present.
	recordSeen atomic.Bool
	// lateDispatches counts dispatches dropped unstarted because their
	// Fed-Ack-Deadline had passed.
	lateDispatches atomic.Int64
	// badCancels counts cancels of a running request without its Fed-Cancel-Key.
	badCancels atomic.Int64
	metrics    *nodeMetrics // GenAI histograms, observed per outcome (metrics.go)
	outcomes   outcomeBatch // completed outcomes waiting to go out together (outcomes.go)
}

// New validates cfg and builds a Service; Start runs it.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, fmt.Errorf("node %s: nil NATS connection", cfg.NodeID)
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node %s: %w", cfg.NodeID, err)
	}
	inst := cfg.InstanceID
	if inst == "" {
		inst = nuid.Next()
	}
	return &Service{
		nc: nc, cfg: cfg, instance: inst, metrics: newNodeMetrics(cfg),
		log:      log.With().Str(logging.KeyNode, cfg.NodeID).Logger(),
		jobs:     map[string][]*job{},
		replay:   newReplays(cfg),
		answered: newAnsweredIDs(),
		blobs:    blobs.NewOpener(nc),
		load:     newScraper(cfg, log.With().Str(logging.KeyNode, cfg.NodeID).Logger()),
		loops:    lifecycle.NewGroup(),
		work:     lifecycle.NewGroupWithCause(errDrained), // jobs' contexts derive from it
	}, nil
}

// InstanceID is the id this process registered with.
func (s *Service) InstanceID() string { return s.instance }

// Start subscribes to cancels, starts the fed-node micro service (infer,
// probe and replay endpoints), starts heartbeats and registers with the catalog
// (retrying until a catalog answers or ctx ends). It returns once the node
// is registered and serving; on failure it undoes all of it.
func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop drains the node: new work is answered draining, requests in flight
// get up to DrainTimeout to finish (then they are cut with a final error),
// heartbeats stop, the node deregisters and the micro service stops. On a
// closed connection nothing can reach the client any more, so in-flight
// requests are cut at once and Stop returns promptly. It is idempotent.
func (s *Service) Stop() error { return s.life.Stop(s.stop) }

func (s *Service) start(ctx context.Context) error {
	// Cancels first, so no accepted request can miss its cancel.
	sub, err := s.nc.Subscribe(s.cfg.Subjects.Cancel("*"), s.onCancel)
	if err != nil {
		return fmt.Errorf("node %s: subscribe to cancels: %w", s.cfg.NodeID, err)
	}
	s.cancelSub = sub
	if s.heldSub, err = s.nc.Subscribe(s.cfg.Subjects.HeldAll(), s.onHeld); err != nil {
		return fmt.Errorf("node %s: subscribe to held questions: %w", s.cfg.NodeID, err)
	}
	if _, err := s.startMicro(); err != nil {
		return err
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("node %s: flush subscriptions: %w", s.cfg.NodeID, err)
	}
	var warmups []record.Outcome
	if s.cfg.Warmup {
		warmups = s.warmup(ctx)
	}
	// Heartbeats only once registered (the registration itself is the
	// catalog's first sign of life). A restarted agent waiting out its
	// previous instance (409) stays silent meanwhile: its heartbeats would
	// keep health from marking the node silent, and routers take the dead
	// instance's requests over on that mark, not node_ttl later when this
	// one's record replaces it.
	if err := s.register(ctx); err != nil {
		return err
	}
	// registered, and serving: register says so
	s.registered = true
	s.loops.Go(func(ctx context.Context) { s.heartbeatLoop(ctx, warmups) }) // its first heartbeat goes out at once
	// From now on a vanished record (expired after a hang, deleted by
	// hand) brings a new registration at once.
	s.loops.Go(s.followRecord)
	s.log.Info().Str(logging.KeySubject, s.cfg.Subjects.NodeInfer(s.cfg.NodeID)).Str("backend", s.cfg.Backend.Name()).
		Int("max_concurrency", s.cfg.MaxConcurrency).Msg("node agent serving")
	return nil
}

// stop takes the node out of the mesh in the README's drain order. After a
// failed start it only undoes what start set up: nothing was registered,
// and a request that arrived meanwhile is cut.
func (s *Service) stop() error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	if s.registered {
		s.log.Info().Msg("draining")
		s.publishHeartbeat() // tell health at once, not at the next tick
	}
	s.drainWork()
	s.flushOutcomes() // the last batched outcomes go out before the deregister

	// Heartbeats stop before the deregister, so no late heartbeat makes the
	// catalog think the node is still alive after its record is gone.
	s.loops.Stop()
	var errs []error
	if s.registered && !s.nc.IsClosed() && s.isServing() { // a stood-down instance's record is another's
		if err := s.deregister(); err != nil {
			errs = append(errs, err)
		}
	}
	s.stopMicro()
	if !s.nc.IsClosed() {
		_ = s.nc.FlushTimeout(time.Second)
	}
	if s.registered {
		s.log.Info().Msg("node agent stopped")
	}
	return errors.Join(errs...)
}

// drainWork waits up to DrainTimeout for the requests in flight; the work
// group's context then ends, which cuts the rest with errDrained. With the
// connection closed (or after a failed start) they are cut at once.
func (s *Service) drainWork() {
	if !s.registered || s.nc.IsClosed() {
		s.work.Stop()
		return
	}
	if !s.work.Drain(s.cfg.DrainTimeout) {
		s.log.Warn().Dur("drain_timeout", s.cfg.DrainTimeout).Msg("drain timeout: cut the requests still in flight")
	}
}

// stopMicro stops the micro service for good and the subscriptions to
// cancels and held questions.
func (s *Service) stopMicro() {
	s.microMu.Lock()
	s.stopEndpointsLocked()
	s.microClosed = true
	s.microMu.Unlock()
	if s.cancelSub != nil {
		_ = s.cancelSub.Unsubscribe()
	}
	if s.heldSub != nil {
		_ = s.heldSub.Unsubscribe()
	}
}
