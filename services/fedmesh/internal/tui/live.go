package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Source is what the model reads: a copy of the data on demand and a
// signal when it changed.
type Source interface {
	Snapshot() Data
	// Changed receives (coalesced) after every change.
	Changed() <-chan struct{}
}

// LiveOptions configure a Live source. Zero fields take the defaults.
type LiveOptions struct {
	Subjects subject.Space
	// Interval is how often a quiet mesh (no fed.health.stats event for
	// statsQuiet) adds a zero point to the stats sparklines (default
	// DefaultInterval).
	Interval time.Duration
	// Timeout bounds one fed.stats request (default DefaultTimeout).
	Timeout time.Duration
	// Stats asks fed.stats once (required): at start, so the stats view is
	// filled at once, and after a reconnect, for the events missed.
	Stats func(context.Context) (record.Stats, error)
	// URL is shown while the connection has no server; never credentials.
	URL string
	// ResetTimeout and HalfOpenSuccesses are the health service's circuit
	// settings (DESIGN §6.5), for the circuit view's countdown.
	ResetTimeout      time.Duration
	HalfOpenSuccesses int
}

// Defaults of LiveOptions' circuit settings: health's defaults (DESIGN §6.6).
const (
	DefaultResetTimeout      = 30 * time.Second
	DefaultHalfOpenSuccesses = 3
	// bucketRetry is how often a top started before the mesh looks for
	// the buckets again.
	bucketRetry = 500 * time.Millisecond
)

// Live follows the mesh as it happens: watches of fed_catalog, fed_health
// and fed_config (buckets.Follow), subscriptions to fed.router.decisions,
// fed.outcome.*, fed.router.unplaced, fed.heartbeat.* and health's
// fed.health.stats events, and the connection's own state through its
// handlers. It asks fed.stats only at start and after a reconnect.
type Live struct {
	nc   *nats.Conn
	opts LiveOptions

	life  lifecycle.Guard
	group *lifecycle.Group
	subs  []*nats.Subscription

	mu      sync.Mutex
	st      *state
	loading string
	connErr string
	connAt  time.Time

	loaded      chan struct{} // closed once every bucket is followed
	statsTried  chan struct{} // closed after the first fed.stats request
	changed     chan struct{}
	reconnected chan struct{} // the watches start again
	reask       chan struct{} // fed.stats is asked again (after a reconnect)
}

var _ Source = (*Live)(nil)

// NewLive builds the source; Start begins following.
func NewLive(nc *nats.Conn, o LiveOptions) *Live {
	o.Interval = cmpOr(o.Interval, DefaultInterval)
	o.Timeout = cmpOr(o.Timeout, DefaultTimeout)
	o.ResetTimeout = cmpOr(o.ResetTimeout, DefaultResetTimeout)
	o.HalfOpenSuccesses = cmpOr(o.HalfOpenSuccesses, DefaultHalfOpenSuccesses)
	return &Live{nc: nc, opts: o, st: newState(time.Now()), loading: "opening buckets",
		loaded: make(chan struct{}), statsTried: make(chan struct{}), changed: make(chan struct{}, 1),
		reconnected: make(chan struct{}, 1), reask: make(chan struct{}, 1)}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Start subscribes and starts following; it does not wait for the mesh
// (a top started before the mesh waits for its buckets: see Ready).
func (l *Live) Start(ctx context.Context) error { return l.life.Start(ctx, l.start, l.stop) }

// Stop ends every watch, subscription and request; idempotent. Ending a
// watch deletes its consumer with a JetStream request: while the
// connection is down, close it first rather than wait out each request.
func (l *Live) Stop() error { return l.life.Stop(l.stop) }

func (l *Live) start(context.Context) error {
	if l.opts.Stats == nil {
		return errors.New("tui: LiveOptions.Stats is required")
	}
	l.group = lifecycle.NewGroup()
	// The handlers make a dropped or restored connection show at once.
	l.nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) { l.connEvent(err) })
	l.nc.SetReconnectHandler(func(*nats.Conn) {
		l.connEvent(nil)
		for _, ch := range []chan struct{}{l.reconnected, l.reask} {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	})
	l.nc.SetClosedHandler(func(*nats.Conn) { l.connEvent(nil) })
	subj := l.opts.Subjects
	for _, sub := range []struct {
		subject string
		handle  func(*nats.Msg)
	}{
		{subj.Decisions(), l.onDecisions},
		{subj.OutcomeAll(), l.onOutcome},
		{subj.Unplaced(), l.onUnplaced},
		{subj.HeartbeatAll(), l.onHeartbeat},
		{subj.HealthStats(), l.onStatsEvent},
	} {
		s, err := l.nc.Subscribe(sub.subject, sub.handle)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", sub.subject, err)
		}
		l.subs = append(l.subs, s)
	}
	if !l.group.Go(l.follow) || !l.group.Go(l.followStats) {
		return lifecycle.ErrStopped
	}
	return nil
}

func (l *Live) stop() error {
	var errs []error
	for _, s := range l.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("unsubscribe %s: %w", s.Subject, err))
		}
	}
	if l.group != nil {
		l.group.Stop()
	}
	l.nc.SetDisconnectErrHandler(nil)
	l.nc.SetReconnectHandler(nil)
	l.nc.SetClosedHandler(nil)
	return errors.Join(errs...)
}

// Changed implements Source.
func (l *Live) Changed() <-chan struct{} { return l.changed }

func (l *Live) notify() {
	select {
	case l.changed <- struct{}{}:
	default: // one pending signal is enough: the reader takes a fresh snapshot
	}
}

// update applies fn to the state under the lock and signals the change.
func (l *Live) update(fn func(s *state)) {
	l.mu.Lock()
	fn(l.st)
	l.mu.Unlock()
	l.notify()
}

func (l *Live) connEvent(err error) {
	l.mu.Lock()
	if err != nil {
		l.connErr = err.Error()
	}
	l.connAt = time.Now()
	l.mu.Unlock()
	l.notify()
}

// Snapshot implements Source.
func (l *Live) Snapshot() Data {
	conn := Conn{State: connState(l.nc.Status()), URL: l.nc.ConnectedUrlRedacted(), Reconnects: l.nc.Stats().Reconnects}
	now := time.Now()
	l.mu.Lock()
	d := l.st.snapshot(now)
	d.Loading = l.loading
	conn.LastErr, conn.Since = l.connErr, l.connAt
	l.mu.Unlock()
	d.Conn = conn
	if d.Conn.URL == "" {
		d.Conn.URL = l.opts.URL
	}
	d.ResetTimeout, d.HalfOpenSuccesses = l.opts.ResetTimeout, l.opts.HalfOpenSuccesses
	return d
}

func connState(s nats.Status) string {
	switch s {
	case nats.CONNECTED, nats.DRAINING_SUBS, nats.DRAINING_PUBS:
		return ConnConnected
	case nats.CONNECTING:
		return ConnConnecting
	case nats.CLOSED:
		return ConnClosed
	}
	return ConnReconnecting // DISCONNECTED, RECONNECTING: the client keeps trying
}

// Ready waits until every bucket is followed and the first fed.stats
// request ended (answered or not), or ctx ends: then it says what was
// still missing.
func (l *Live) Ready(ctx context.Context) error {
	for _, ch := range []chan struct{}{l.loaded, l.statsTried} {
		select {
		case <-ch:
		case <-ctx.Done():
			l.mu.Lock()
			loading := l.loading
			l.mu.Unlock()
			if loading == "" {
				loading = "waiting for fed.stats"
			}
			return fmt.Errorf("mesh not readable from %s (%s): %w", l.opts.URL, loading, ctx.Err())
		}
	}
	return nil
}

func (l *Live) setLoading(s string) {
	l.mu.Lock()
	l.loading = s
	l.mu.Unlock()
	l.notify()
}

// follow opens the buckets (waiting for a mesh that has not created them
// yet) and follows each; fed_config with its history, so a value routers
// rejected still shows which earlier value they kept. After a reconnect
// it follows them again from scratch: a watch's consumer may have gone
// with the server, and a new watch resumes at once where the old one
// would wait for missed heartbeats. Replaying current values over the
// old ones is safe: deletes come back as delete markers.
func (l *Live) follow(ctx context.Context) {
	js, err := jetstream.New(l.nc)
	if err != nil {
		l.setLoading("jetstream: " + err.Error())
		return
	}
	var set *buckets.Set
	for {
		if set, err = buckets.Open(ctx, js, 0); err == nil {
			break
		}
		l.setLoading("waiting for the buckets: " + err.Error())
		if !sleep(ctx, bucketRetry) {
			return
		}
	}
	first := true
	for {
		watches := lifecycle.NewGroup()
		ok := l.followAll(ctx, watches, set)
		if ok && first {
			first = false
			close(l.loaded)
		}
		select {
		case <-ctx.Done():
		case <-l.reconnected:
		}
		watches.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// followAll follows the three buckets on g; false when ctx ended first.
func (l *Live) followAll(ctx context.Context, g *lifecycle.Group, set *buckets.Set) bool {
	for _, f := range []struct {
		kv    jetstream.KeyValue
		apply func(jetstream.KeyValueEntry)
		opts  []jetstream.WatchOpt
	}{
		{set.Catalog, l.onCatalog, nil},
		{set.Health, l.onHealth, nil},
		{set.Config, l.onConfig, []jetstream.WatchOpt{jetstream.IncludeHistory()}},
	} {
		l.setLoading("loading " + f.kv.Bucket())
		for {
			err := buckets.Follow(ctx, g, f.kv, f.apply, f.opts...)
			if err == nil {
				break
			}
			l.setLoading("loading " + f.kv.Bucket() + ": " + err.Error())
			if !sleep(ctx, bucketRetry) {
				return false
			}
		}
	}
	l.setLoading("")
	return true
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// followStats asks fed.stats at start (so the view is filled before the
// first event, which a quiet mesh may never send) and again after each
// reconnect (the events published meanwhile are lost), each time every
// Interval until one answer comes (health may not be up yet). Otherwise it
// only keeps the sparklines moving: every Interval while connected, a
// mesh that sent no fed.health.stats event for statsQuiet gets a
// zero-rate point.
func (l *Live) followStats(ctx context.Context) {
	need := !l.askStats(ctx)
	close(l.statsTried)
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.reask:
			need = !l.askStats(ctx)
		case now := <-t.C:
			if need {
				need = !l.askStats(ctx)
			} else if l.nc.IsConnected() {
				l.update(func(s *state) { s.statsQuietTick(now) })
			}
		}
	}
}

// askStats asks fed.stats once and applies the answer (or the failure);
// true when it was answered.
func (l *Live) askStats(ctx context.Context) bool {
	if !l.nc.IsConnected() {
		l.update(func(s *state) {
			s.statsFailed(fmt.Errorf("not connected: %s", strings.ToLower(l.nc.Status().String())), time.Now())
		})
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
	st, err := l.opts.Stats(rctx)
	cancel()
	now := time.Now()
	if ctx.Err() != nil {
		return false
	}
	l.update(func(s *state) {
		if err != nil {
			s.statsFailed(err, now)
		} else {
			s.applyStats("", st, now)
		}
	})
	return err == nil
}

func (l *Live) onStatsEvent(m *nats.Msg) {
	e, err := record.DecodeStatsEvent(m.Data)
	now := time.Now()
	l.update(func(s *state) {
		if err != nil {
			s.ignore(srcStats, err)
			return
		}
		s.applyStats(e.Health, e.Stats, now)
	})
}

func (l *Live) onCatalog(e jetstream.KeyValueEntry) {
	l.update(func(s *state) { s.applyCatalog(e.Key(), buckets.Deleted(e), e.Value()) })
}

func (l *Live) onHealth(e jetstream.KeyValueEntry) {
	l.update(func(s *state) { s.applyHealth(e.Key(), buckets.Deleted(e), e.Value()) })
}

func (l *Live) onConfig(e jetstream.KeyValueEntry) {
	l.update(func(s *state) { s.applyConfig(e.Key(), e.Revision(), e.Created(), buckets.Deleted(e), e.Value()) })
}

func (l *Live) onDecisions(m *nats.Msg) {
	d, err := record.DecodeDecisions(m.Data)
	now := time.Now()
	l.update(func(s *state) {
		if err != nil {
			s.ignore(srcDecisions, err)
			return
		}
		s.applyDecisions(d, now)
	})
}

func (l *Live) onOutcome(m *nats.Msg) {
	outs, err := record.DecodeOutcomes(m.Subject, m.Data) // one outcome or a batch (DESIGN §9.2)
	l.update(func(s *state) {
		if err != nil {
			s.ignore(srcOutcomes, err)
		}
		for _, o := range outs {
			if o.Kind == record.OutcomeCompleted { // only a node's completed outcome ends a placement
				s.applyOutcome(o)
			}
		}
	})
}

func (l *Live) onUnplaced(m *nats.Msg) {
	u, err := record.DecodeUnplaced(m.Data)
	now := time.Now()
	l.update(func(s *state) {
		if err != nil {
			s.ignore(srcUnplaced, err)
			return
		}
		s.applyUnplaced(u, now)
	})
}

func (l *Live) onHeartbeat(m *nats.Msg) {
	hb, err := record.DecodeHeartbeat(m.Subject, m.Data)
	now := time.Now()
	l.update(func(s *state) {
		if err != nil {
			s.ignore(srcBeats, err)
			return
		}
		s.applyHeartbeat(hb, now)
	})
}
