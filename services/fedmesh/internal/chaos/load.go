package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// request is one request of the load, with every message its client got.
type request struct {
	id     string
	client int
	stream bool
	body   []byte
	start  time.Time

	mu      sync.Mutex
	msgs    []message
	follow  follow    // the client rules over msgs so far: which final is the request's
	end     time.Time // the request's final, or the client's deadline
	finalCh chan struct{}
	gotFin  bool
	cut     bool // the client's connection dropped while it ran
	// gapCh: a gap waits for a replay (deliver signals, the client's loop
	// asks); replays asked so far, the last Fed-Seq of the latest, and
	// when its messages must have filled the gap.
	gapCh   chan struct{}
	replays int
	// unanswered: when the first replay nobody answered failed
	unanswered time.Time
	askedTo    int
	fillBy     time.Time
	// resends: the request went out again, nobody holding it (§3.8)
	resends int

	verdict Verdict
}

// streamNode is the node the client follows while the stream runs (the
// first to answer, or the one that took over from it), else "".
func (r *request) streamNode() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stream || r.gotFin {
		return ""
	}
	return r.follow.kept
}

// client is one closed-loop client: its own connection, one wildcard
// subscription for its requests' inboxes, one request at a time.
type client struct {
	idx    int
	nc     *nats.Conn
	inbox  string
	stream bool
	tenant string

	mu      sync.Mutex
	pending map[string]*request // by inbox token, kept after the final to catch late messages
	drops   atomic.Int64        // disconnects of the connection
}

// load runs the clients and keeps every request.
type load struct {
	m        *mesh
	o        *Options
	timeout  time.Duration // Fed-Timeout-Ms and the client's timer
	grace    time.Duration // the client waits this much past the timeout for the mesh's own final
	subj     string
	clients  []*client
	mu       sync.Mutex
	reqs     []*request
	stopping atomic.Bool
	wg       sync.WaitGroup
	seq      atomic.Int64
	t0       time.Time
}

func newLoad(m *mesh, o *Options, t0 time.Time) *load {
	return &load{m: m, o: o, timeout: o.ClientTimeout, grace: time.Second, subj: m.space.Infer(capability), t0: t0}
}

// connect opens every client's connection, spread over the servers.
func (l *load) connect() error {
	for i := range l.o.Clients {
		c := &client{idx: i, stream: i%2 == 0, tenant: "tenant-" + strconv.Itoa(i%4), pending: map[string]*request{}}
		nc, err := nats.Connect(l.m.urls(i), nats.Name(fmt.Sprintf("chaos-client-%d", i)), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
			nats.DisconnectErrHandler(func(*nats.Conn, error) { c.drops.Add(1) }))
		if err != nil {
			return fmt.Errorf("client %d: connect: %w", i, err)
		}
		c.nc = nc
		c.inbox = nats.NewInbox()
		if _, err := nc.Subscribe(c.inbox+".*", c.deliver); err != nil {
			return fmt.Errorf("client %d: subscribe: %w", i, err)
		}
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("client %d: flush: %w", i, err)
		}
		l.clients = append(l.clients, c)
	}
	return nil
}

func (c *client) deliver(m *nats.Msg) {
	now := time.Now()
	tok := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c.mu.Lock()
	r := c.pending[tok]
	c.mu.Unlock()
	if r == nil {
		return
	}
	msg := decodeMessage(m, now)
	r.mu.Lock()
	r.msgs = append(r.msgs, msg)
	// The request's final by the client rules: not a replaced node's, not a
	// Fed-Lost-Node error naming a node the client does not follow.
	if r.follow.add(msg) {
		r.gotFin = true
		r.end = now
		close(r.finalCh)
	}
	_, _, _, gap := r.follow.gap()
	r.mu.Unlock()
	if gap { // the client's loop asks for the replay: this callback never waits
		select {
		case r.gapCh <- struct{}{}:
		default:
		}
	}
}

// Replays, as a compliant client does them (DESIGN, shared/client): one
// replay request per gap, each bounded by replayTimeout (and the deadline),
// the replayed messages given replayTimeout to fill it, at most maxReplays
// per request.
const (
	replayTimeout = 500 * time.Millisecond
	maxReplays    = 3
	// replayRetryPause: a replay nobody answered (no responders, a
	// timeout: the node reconnecting after a failover) is asked again after
	// it, up to the deadline, not counted in maxReplays
	replayRetryPause = 250 * time.Millisecond
	replayPatience   = 3 * time.Second
)

func replayUnanswered(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}

// recoverGap asks the kept node to replay a gap of r, or checks that the
// replay asked for filled it; false when the client gives up on the gap
// (then the request has its giveUp mark). It runs on the client's loop.
func (l *load) recoverGap(c *client, r *request) bool {
	r.mu.Lock()
	node, from, to, gap := r.follow.gap()
	asked, fillBy, replays := r.askedTo, r.fillBy, r.replays
	r.mu.Unlock()
	switch {
	case !gap:
		return true
	case from <= asked: // asked for: filled in time, or given up
		if time.Now().Before(fillBy) {
			return true
		}
		return r.giveUp("the replayed messages did not fill it in " + replayTimeout.String())
	case replays >= maxReplays:
		return r.giveUp(fmt.Sprintf("%d replays asked for already", replays))
	}
	d := min(replayTimeout, time.Until(r.start.Add(l.timeout)))
	if d <= 0 {
		return true // the deadline decides
	}
	r.mu.Lock()
	r.replays++
	r.mu.Unlock()
	if err := askReplay(c.nc, l.m.space.NodeReplay(node), r.id, from, to, d); err != nil {
		r.mu.Lock()
		if r.unanswered.IsZero() {
			r.unanswered = time.Now()
		}
		patient := time.Since(r.unanswered) < replayPatience
		r.mu.Unlock()
		if !replayUnanswered(err) || !patient {
			return r.giveUp(fmt.Sprintf("node %s: %v", node, err))
		}
		// nobody answered (a failover): ask again after a pause, for
		// replayPatience, as the SDK does
		r.mu.Lock()
		r.replays--
		r.fillBy = time.Now().Add(replayRetryPause)
		r.mu.Unlock()
		return true
	}
	r.mu.Lock()
	r.askedTo, r.fillBy = to, time.Now().Add(replayTimeout)
	r.mu.Unlock()
	return true
}

// stallAfter is how long a stream that has chunks may hear nothing before
// its client asks the node for the next Fed-Seq (as the SDK does).
const stallAfter = 2 * time.Second

// probeStall asks the kept node of a stalled stream for the Fed-Seq it
// expects next: a node that sent it (its final, lost with a server) replays
// it; one that has not got that far answers 404, and the stream goes on
// waiting. Nothing is concluded from the answer: the messages decide.
func (l *load) probeStall(c *client, r *request) {
	r.mu.Lock()
	node, next, started := r.follow.kept, r.follow.next(), r.follow.kept != "" && r.follow.final == nil
	_, _, _, gap := r.follow.gap()
	quiet := len(r.msgs) > 0 && time.Since(r.msgs[len(r.msgs)-1].at) >= stallAfter
	r.mu.Unlock()
	if !r.stream || !started || gap || next == 0 || !quiet {
		return
	}
	d := min(replayTimeout, time.Until(r.start.Add(l.timeout)))
	if d <= 0 {
		return
	}
	_ = askReplay(c.nc, l.m.space.NodeReplay(node), r.id, next, next, d)
}

// Silent requests, as shared/client has them (DESIGN §3.8).
const (
	heldWait   = 500 * time.Millisecond
	maxResends = 2
)

// askHeld: a request that has heard nothing at all when its stall timer
// fires (stallAfter of quiet, the SDK's SilentAfter) asks fed.held.<id>
// and, when nobody holds it and it still heard nothing, sends msg again
// with what is left of its deadline (DESIGN §3.8), as any client does.
func (l *load) askHeld(c *client, r *request, msg *nats.Msg) {
	heard := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.msgs) > 0
	}
	left := time.Until(r.start.Add(l.timeout))
	if heard() || r.resends >= maxResends || left <= 0 {
		return
	}
	if _, err := c.nc.Request(l.m.space.Held(r.id), nil, min(heldWait, left)); err == nil ||
		!(errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)) || heard() {
		return
	}
	again := nats.NewMsg(msg.Subject)
	again.Reply, again.Data = msg.Reply, msg.Data
	for k, v := range msg.Header {
		again.Header[k] = v
	}
	again.Header.Set(wire.HdrTimeoutMs, strconv.FormatInt(max(time.Until(r.start.Add(l.timeout)).Milliseconds(), 1), 10))
	if c.nc.PublishMsg(again) == nil {
		r.mu.Lock()
		r.resends++
		r.mu.Unlock()
	}
}

// askReplay is the replay request on the wire, as any client sends it.
func askReplay(nc *nats.Conn, subj, id string, from, to int, d time.Duration) error {
	body, err := json.Marshal(api.ReplayRequest{RequestID: id, FromSeq: from, ToSeq: to})
	if err != nil {
		return fmt.Errorf("request %s: %w", id, err)
	}
	resp, err := nc.Request(subj, body, d)
	if err != nil {
		return fmt.Errorf("request %s, Fed-Seq %d…%d: %w", id, from, to, err)
	}
	if code := resp.Header.Get(wire.HdrServiceErrorCode); code != "" {
		return fmt.Errorf("request %s, Fed-Seq %d…%d: error %s: %s", id, from, to, code, resp.Header.Get(wire.HdrServiceError))
	}
	var rr api.ReplayResponse
	if err := json.Unmarshal(resp.Data, &rr); err != nil {
		return fmt.Errorf("request %s: bad replay answer: %w", id, err)
	}
	if rr.Sent < to-from+1 {
		return fmt.Errorf("request %s: %d of %d messages replayed", id, rr.Sent, to-from+1)
	}
	return nil
}

// giveUp ends r at a gap its replays could not fill; it returns false.
func (r *request) giveUp(why string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	mark := message{at: now, seq: -1, tokens: -1, giveUp: why}
	r.msgs = append(r.msgs, mark)
	r.follow.add(mark)
	if !r.gotFin {
		r.end = now
	}
	return false
}

// run starts the clients; they loop until stop.
func (l *load) run(ctx context.Context) {
	for _, c := range l.clients {
		l.wg.Go(func() {
			for !l.stopping.Load() && ctx.Err() == nil {
				if !l.one(ctx, c) {
					// A client backs off a little after a failure rather
					// than spinning on fast errors.
					sleepUntil(ctx, time.Now().Add(errorPause))
				}
			}
		})
	}
}

// stop lets each client finish its request and waits for them.
func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
}

func (l *load) close() {
	for _, c := range l.clients {
		c.nc.Close()
	}
}

// errorPause is how long a client waits after a failed request.
const errorPause = 100 * time.Millisecond

// one sends a request and waits for its final or the client's deadline;
// it reports whether the final said done.
func (l *load) one(ctx context.Context, c *client) bool {
	n := l.seq.Add(1)
	r := &request{
		id:      fmt.Sprintf("chaos-%d-c%d-%d", l.o.Seed, c.idx, n),
		client:  c.idx,
		stream:  c.stream,
		body:    fmt.Appendf(nil, "chaos %d: client %d asks question %d", l.o.Seed, c.idx, n),
		finalCh: make(chan struct{}),
		gapCh:   make(chan struct{}, 1),
		askedTo: -1,
	}
	tok := strconv.FormatInt(n, 10)
	msg := nats.NewMsg(l.subj)
	msg.Reply = c.inbox + "." + tok
	msg.Data = r.body
	msg.Header.Set(wire.HdrRequestID, r.id)
	msg.Header.Set(wire.HdrTimeoutMs, strconv.FormatInt(l.timeout.Milliseconds(), 10))
	msg.Header.Set(wire.HdrTenant, c.tenant)
	if c.stream {
		msg.Header.Set(wire.HdrStream, "true")
	}
	c.mu.Lock()
	c.pending[tok] = r
	c.mu.Unlock()
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
	drops := c.drops.Load()
	r.start = time.Now()
	if err := c.nc.PublishMsg(msg); err != nil {
		r.mu.Lock()
		r.cut, r.end = true, time.Now()
		r.mu.Unlock()
		return false
	}
	t := time.NewTimer(l.timeout + l.grace)
	defer t.Stop()
	var fill *time.Timer // while a replay's messages are awaited
	defer func() {
		if fill != nil {
			fill.Stop()
		}
	}()
	// stall: a stream that has chunks and no gap but hears nothing for
	// stallAfter asks its node for the next Fed-Seq (its final may be the
	// message lost, and a lost final shows no gap); one timer, reset.
	stall := time.NewTimer(stallAfter)
	defer stall.Stop()
wait:
	for {
		var filled <-chan time.Time
		if fill != nil {
			filled = fill.C
		}
		stall.Reset(stallAfter)
		select {
		case <-r.finalCh:
			break wait
		case <-r.gapCh:
		case <-filled:
			fill = nil
		case <-stall.C:
			l.askHeld(c, r, msg)
			l.probeStall(c, r)
			continue
		case <-t.C:
			r.mu.Lock()
			if !r.gotFin {
				r.end = time.Now()
			}
			r.mu.Unlock()
			break wait
		case <-ctx.Done():
			break wait
		}
		if !l.recoverGap(c, r) {
			break wait
		}
		r.mu.Lock()
		_, _, _, gap := r.follow.gap()
		by := r.fillBy
		r.mu.Unlock()
		if gap && fill == nil && time.Now().Before(by) {
			fill = time.NewTimer(time.Until(by) + time.Millisecond)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = r.cut || c.drops.Load() != drops
	return r.follow.final != nil && r.follow.final.status == wire.StatusDone
}

// inFlightStreams counts, per node, the streams running there now (by the
// node their client follows).
func (l *load) inFlightStreams() map[string]int {
	l.mu.Lock()
	reqs := l.reqs
	if len(reqs) > 400 {
		reqs = reqs[len(reqs)-400:]
	}
	reqs = append([]*request(nil), reqs...)
	l.mu.Unlock()
	out := map[string]int{}
	for _, r := range reqs {
		if n := r.streamNode(); n != "" {
			out[n]++
		}
	}
	return out
}

// judgeAll classifies every request; call after the clients stopped and
// late messages had time to arrive.
func (l *load) judgeAll(expect func(body []byte) expectation) []*request {
	l.mu.Lock()
	reqs := append([]*request(nil), l.reqs...)
	l.mu.Unlock()
	for _, r := range reqs {
		r.mu.Lock()
		msgs := append([]message(nil), r.msgs...)
		cut := r.cut
		r.mu.Unlock()
		r.verdict = judge(msgs, r.stream, cut, expect(r.body))
		r.verdict.Resent = r.resends
	}
	return reqs
}
