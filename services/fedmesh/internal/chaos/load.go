package chaos

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

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
	r.mu.Unlock()
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
	select {
	case <-r.finalCh:
	case <-t.C:
		r.mu.Lock()
		if !r.gotFin {
			r.end = time.Now()
		}
		r.mu.Unlock()
	case <-ctx.Done():
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
	}
	return reqs
}
