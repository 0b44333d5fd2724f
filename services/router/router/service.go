package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// flushTimeout bounds Start's round trip that makes sure the server has the
// endpoints' subscriptions: FlushWithContext needs a deadline and the
// caller's ctx may have none.
const flushTimeout = 10 * time.Second

var _ servicecmd.Service = (*Service)(nil)

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
	// answered: recent requests a node sent its final for (answered.go)
	answered *answered
	// decisions batches the decision events (DESIGN §9.5)
	decisions *decisions
	// prefix is the prefix index of expected_ttft (prefix.go)
	prefix *prefixIndex
	queue  *waitQueue
	mw     []Middleware
	rr     atomic.Uint64 // round-robin tickets
	// inFlight counts the requests being placed (MaxInFlight bounds it)
	inFlight atomic.Int32
	// active are the placements in progress (Stop waits for them); sched
	// runs their timers, acks their dispatches' acks
	active active
	sched  *sched
	acks   *acks
	// stopping: StopTimeout is over, every placement ends at its next step
	stopping atomic.Bool
	// deciders takes the steps of placements whose decisions judge many
	// nodes (offload), run by one decider goroutine per core
	deciders chan *placement

	stats routerStats
	lag   metrics.WatchLag // fedmesh_kv_watch_lag_seconds of the three watches (metrics.go)

	life lifecycle.Guard
	// loops runs the KV watchers and the outstanding sweeper.
	loops *lifecycle.Group
	// requests runs the candidates explanations and the takeovers of lost
	// nodes (placements themselves run on no goroutine of their own).
	// micro drains its subscriptions asynchronously, so handlers can still
	// run after svc.Stop returns: the group and active refusing them then
	// is what keeps them from starting after Stop began waiting.
	requests *lifecycle.Group
	svc      micro.Service
	outSub   *nats.Subscription
	heldSub  *nats.Subscription // fed.held.* (DESIGN §3.8)
}

// routerStats are the counters in `nats micro stats fed-router`.
type routerStats struct {
	requests, placed, unplaced, retries, rejected atomic.Int64
	// queue: requests that entered it, left it (placed or not), were
	// answered 429 for waiting too long or for a full queue; total wait
	queued, queueLeft, queueTimeouts, queueFull, queueWaitNs atomic.Int64
	tooLarge, cancels, busy                                  atomic.Int64
	// requests of lost nodes: re-placed with Fed-Takeover, or ended with a
	// 503 Fed-Lost-Node final
	takeovers, lostFinals atomic.Int64
	// finals the router did not send: the node of an attempt whose ack was
	// lost answered the client itself
	finalsSuppressed atomic.Int64
	doneAcks         atomic.Int64
	// status questions after a lost ack, and those the node answered held
	statusAsked, statusHeld atomic.Int64
	// steps handed to the deciders (offload); not reported
	offloaded atomic.Int64
}

// New validates cfg (zero fields take their defaults) and builds a router;
// Start makes it serve. log should already name the instance.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("router: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = nuid.Next()
	}
	s := &Service{nc: nc, cfg: cfg, log: log,
		cache: newCache(), limits: newTenantLimits(), out: newOutstanding(), answered: newAnswered(), queue: newWaitQueue(cfg.MaxQueue),
		sched: newSched(), deciders: make(chan *placement, decidersQueue),
		loops: lifecycle.NewGroup(), requests: lifecycle.NewGroup()}
	s.queue.sc = s.sched
	s.prefix = newPrefixIndex(cfg.PrefixIndexBlocks)
	s.decisions = &decisions{nc: nc, subject: cfg.Subjects.Decisions(), router: cfg.InstanceID, log: log}
	s.policy.Store(newPolicyState(cfg.Policy))
	s.mw = append([]Middleware{logMiddleware{s.log}, limitMiddleware{s.limits}}, cfg.Middleware...)
	return s, nil
}

// Start loads fed_catalog, fed_health and fed_config into memory, keeps
// watching them, and registers micro service fed-router. It returns once the
// initial values are loaded and the endpoints are subscribed.
func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop stops taking requests, lets the ones being placed finish (up to
// Config.StopTimeout, then cancels them), and stops every goroutine.
func (s *Service) Stop() error { return s.life.Stop(s.stop) }

func (s *Service) start(ctx context.Context) error {
	set, err := buckets.EnsureConn(ctx, s.nc, s.cfg.Buckets)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if err := s.follow(ctx, set); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if s.outSub, err = s.nc.Subscribe(s.cfg.Subjects.OutcomeAll(), s.onOutcome); err != nil {
		return fmt.Errorf("router: subscribe outcomes: %w", err)
	}
	// one subscription for every dispatch's ack, under the connection's
	// inbox prefix (a secured router may subscribe only there)
	s.acks = newAcks(s.nc.NewInbox())
	if s.acks.sub, err = s.nc.Subscribe(s.acks.subject(), s.onAck); err != nil {
		return fmt.Errorf("router: subscribe acks: %w", err)
	}
	if s.heldSub, err = s.nc.Subscribe(s.cfg.Subjects.HeldAll(), s.onHeld); err != nil {
		return fmt.Errorf("router: subscribe held questions: %w", err)
	}
	s.loops.Go(s.sched.run)
	for range max(runtime.GOMAXPROCS(0), 2) {
		s.loops.Go(s.decide)
	}
	s.loops.Every(s.cfg.SweepInterval, s.sweepOutstanding)
	s.loops.Every(queueKickInterval, s.kickQueue)
	s.loops.Every(decisionsEvery, func(context.Context, time.Time) { s.decisions.flush() })
	if err := s.serve(); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	fctx, cancelFlush := context.WithTimeout(ctx, flushTimeout)
	defer cancelFlush()
	if err := s.nc.FlushWithContext(fctx); err != nil {
		return fmt.Errorf("router: flush subscriptions: %w", err)
	}
	s.log.Info().Int("nodes", s.cache.nodeCount()).Str("strategy", s.policy.Load().Strategy).Msg("router started")
	return nil
}

// serve registers micro service fed-router and its endpoints.
func (s *Service) serve() error {
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
		return fmt.Errorf("add micro service: %w", err)
	}
	s.svc = svc
	for _, ep := range []struct {
		name, subject string
		handle        micro.HandlerFunc
	}{
		{"infer", s.cfg.Subjects.InferAll(), s.handleInfer},
		{"candidates", s.cfg.Subjects.RouterCandidates(), s.handleCandidates},
	} {
		if err := svc.AddEndpoint(ep.name, ep.handle, micro.WithEndpointSubject(ep.subject),
			micro.WithEndpointQueueGroup(subject.QueueRouter)); err != nil {
			return fmt.Errorf("add endpoint %s: %w", ep.name, err)
		}
	}
	return nil
}

// onHeld answers fed.held.<request_id> (DESIGN §3.8) when this router is
// placing that request (deciding, queued, awaiting an ack, taking it
// over) or has dispatched it and not yet seen it complete; otherwise it
// stays silent, as every router and node that does not hold it does.
func (s *Service) onHeld(m *nats.Msg) {
	id := subject.LastToken(m.Subject)
	if m.Reply == "" || !(s.active.has(id) || s.out.has(id)) {
		return
	}
	if err := m.Respond(api.HeldAnswer); err != nil {
		s.log.Debug().Err(err).Str(logging.KeyRequest, id).Msg("held answer not sent")
	}
}

// stop undoes whatever start did: it also runs after a failed start.
func (s *Service) stop() error {
	var errs []error
	if s.svc != nil {
		if err := s.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("router: stop micro service: %w", err))
		}
	}
	s.drain()
	for _, sub := range []*nats.Subscription{s.outSub, s.ackSub(), s.heldSub} {
		if sub == nil {
			continue
		}
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("router: unsubscribe %s: %w", sub.Subject, err))
		}
	}
	s.loops.Stop()
	s.decisions.flush() // the placements of the last requests
	return errors.Join(errs...)
}

// drain gives the requests being placed (and the takeovers and
// explanations running) StopTimeout to finish, then cuts every wait short:
// each such request is answered 503 "router shutting down". A finals grace
// already running still runs out (at most finalGrace).
func (s *Service) drain() {
	deadline := time.Now().Add(s.cfg.StopTimeout)
	s.active.close()
	s.requests.Close()
	placed := s.active.wait(s.cfg.StopTimeout)
	finished := s.requests.Drain(max(time.Until(deadline), 0))
	if placed && finished {
		return
	}
	s.log.Warn().Dur("stop_timeout", s.cfg.StopTimeout).Msg("router stop: cancelled requests still being placed")
	s.stopping.Store(true)
	for _, p := range s.active.all() {
		s.sched.expediteAny(&p.tm)
	}
	if !s.active.wait(finalGrace + stopAbortWait) {
		s.log.Error().Int("requests", s.active.len()).Msg("router stop: requests still being placed after they were cancelled")
	}
}

// decidersQueue bounds the placements waiting for a decider; beyond it
// they decide where they are.
const decidersQueue = 1024

// stopAbortWait bounds how long Stop waits for cancelled placements beyond
// a finals grace: their steps publish and end, nothing waits.
const stopAbortWait = 2 * time.Second

func (s *Service) ackSub() *nats.Subscription {
	if s.acks == nil {
		return nil
	}
	return s.acks.sub
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
	// QueueLen is how many requests wait for a free slot now.
	QueueLen int `json:"queue_len"`
	// Queued counts the requests that ever waited in the queue.
	Queued int64 `json:"queued"`
	// QueueWaitAvgMs is the mean time in the queue of the requests that left it.
	QueueWaitAvgMs float64 `json:"queue_wait_avg_ms"`
	// QueueTimeouts counts 429s after waiting max_queue_ms (or until just
	// before the deadline); QueueFull 429s because the queue was full.
	QueueTimeouts int64 `json:"queue_timeouts"`
	QueueFull     int64 `json:"queue_full"`
	// TooLarge counts 413s: dispatches that would not fit max_payload.
	TooLarge int64 `json:"too_large"`
	// AckCancels counts targeted cancels sent after an ack never came.
	AckCancels int64 `json:"ack_cancels"`
	// FinalsSuppressed counts final errors not sent because the node of an
	// attempt whose ack was lost answered the client itself.
	FinalsSuppressed int64 `json:"finals_suppressed"`
	// Busy counts busy acks (the request went on to another node or waited).
	Busy int64 `json:"busy"`
	// DoneAcks counts dispatches acked done: the node answered at once and
	// acked after its final (DESIGN §4).
	DoneAcks int64 `json:"done_acks"`
	// Takeovers counts requests of a lost node placed again on another node
	// (dispatched with Fed-Takeover and accepted).
	Takeovers int64 `json:"takeovers"`
	// LostFinals counts requests of a lost node that could not continue and
	// got a final 503 with Fed-Lost-Node.
	LostFinals int64 `json:"lost_finals"`
	// StatusAsked counts nodes asked whether they hold a request whose
	// dispatch ack never came, at the ack wait's end and again at the end of
	// the finals grace; StatusHeld those that said held (the request stayed
	// placed there, or the router sent no final error; DESIGN §4).
	StatusAsked int64 `json:"status_asked"`
	StatusHeld  int64 `json:"status_held"`
}

// Stats returns the router's counters.
func (s *Service) Stats() Stats {
	st := Stats{
		Nodes:            s.cache.nodeCount(),
		InFlight:         int(s.inFlight.Load()),
		Outstanding:      s.out.len(),
		Requests:         s.stats.requests.Load(),
		Placed:           s.stats.placed.Load(),
		Unplaced:         s.stats.unplaced.Load(),
		Retries:          s.stats.retries.Load(),
		Rejected:         s.stats.rejected.Load(),
		Strategy:         s.policy.Load().Strategy,
		QueueLen:         s.queue.length(),
		Queued:           s.stats.queued.Load(),
		QueueTimeouts:    s.stats.queueTimeouts.Load(),
		QueueFull:        s.stats.queueFull.Load(),
		TooLarge:         s.stats.tooLarge.Load(),
		AckCancels:       s.stats.cancels.Load(),
		FinalsSuppressed: s.stats.finalsSuppressed.Load(),
		Busy:             s.stats.busy.Load(),
		DoneAcks:         s.stats.doneAcks.Load(),
		Takeovers:        s.stats.takeovers.Load(),
		LostFinals:       s.stats.lostFinals.Load(),
		StatusAsked:      s.stats.statusAsked.Load(),
		StatusHeld:       s.stats.statusHeld.Load(),
	}
	if n := s.stats.queueLeft.Load(); n > 0 {
		st.QueueWaitAvgMs = math.Round(float64(s.stats.queueWaitNs.Load())/float64(n)/1e3) / 1e3
	}
	return st
}
