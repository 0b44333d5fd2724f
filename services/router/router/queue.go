package router

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// waitQueue holds the requests that found every eligible node full (busy
// acks, or load at max_concurrency) until a slot frees. It is fair across
// tenants: wakes go round robin over the tenants with waiters, and within a
// tenant in arrival order. Its length (waiters from the moment they enter
// until they leave, placed or not) is bounded by Config.MaxQueue.
//
// A waiter is woken by a slot-free signal — a completed outcome of a node,
// a health record or an ack showing room, the periodic kick — and then
// decides again; a woken waiter that still finds no room goes back to the
// head of its tenant's line (it keeps its turn). A placement's waiter is
// woken by its timer (timerWake on sched), not by a goroutine blocked on it.
type waitQueue struct {
	mu      sync.Mutex
	sc      *sched // runs the wakes of placements' waiters; nil in unit tests
	max     int
	n       int          // waiters in the queue, woken or not
	size    atomic.Int32 // n, readable without the lock
	tenants map[string]*tenantLine
	ring    []*tenantLine // tenants with waiting waiters, in round-robin order
	next    int           // ring index the next wake starts at
	// lastWake is when a waiter was last woken (Unix ns): the periodic kick
	// only runs when wakes have stopped
	lastWake atomic.Int64
}

// tenantLine is one tenant's waiting requests in arrival order.
type tenantLine struct {
	tenant string
	ws     []*waiter
}

// waiter is one queued request.
type waiter struct {
	tenant     string
	capability string
	model      string
	// p is the queued placement, woken through its timer; a waiter
	// without one is woken on wake (buffered 1: a wake never blocks the
	// waker)
	p       *placement
	gen     uint64 // the placement's queue wait; under waitQueue.mu
	wake    chan struct{}
	waiting bool      // in a tenant line (not woken); under waitQueue.mu
	since   time.Time // when the request first entered the queue
}

func newWaitQueue(max int) *waitQueue {
	return &waitQueue{max: max, tenants: map[string]*tenantLine{}}
}

func newWaiter(tenant, capability, model string, now time.Time) *waiter {
	return &waiter{tenant: tenant, capability: capability, model: model, wake: make(chan struct{}, 1), since: now}
}

// newPlacementWaiter is p's waiter: p's timer wakes it.
func newPlacementWaiter(p *placement, now time.Time) *waiter {
	return &waiter{tenant: p.spec.Tenant, capability: p.query.capability, model: p.query.model, p: p, since: now}
}

// enter counts w into the queue; false when the queue is full.
func (q *waitQueue) enter() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n >= q.max {
		return false
	}
	q.n++
	q.size.Store(int32(q.n))
	return true
}

// leave counts a waiter out of the queue (placed, failed or timed out). It
// reports whether w had been woken without using the wake, so the caller can
// pass it on.
func (q *waitQueue) leave(w *waiter) (unusedWake bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n--
	q.size.Store(int32(q.n))
	if w.waiting {
		q.removeLocked(w)
		return false
	}
	select {
	case <-w.wake:
		return true
	default:
		return false
	}
}

// wait puts w in its tenant's line: at the tail the first time, at the head
// when it was woken and found no room (it keeps its turn).
func (q *waitQueue) wait(w *waiter, head bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waitLocked(w, head)
}

// park is wait for a placement's waiter in its wait gen: the placement's
// queue limit is scheduled under the queue's lock, so a wake (which
// reschedules that timer as timerWake) always comes after it.
func (q *waitQueue) park(w *waiter, head bool, gen uint64, limit time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.gen = gen
	q.sc.at(&w.p.tm, limit, w.p, timerQueue, gen)
	q.waitLocked(w, head)
}

func (q *waitQueue) waitLocked(w *waiter, head bool) {
	l := q.tenants[w.tenant]
	if l == nil {
		l = &tenantLine{tenant: w.tenant}
		q.tenants[w.tenant] = l
		q.ring = append(q.ring, l)
	}
	if head {
		l.ws = append(l.ws, nil)
		copy(l.ws[1:], l.ws)
		l.ws[0] = w
	} else {
		l.ws = append(l.ws, w)
	}
	w.waiting = true
}

// wakeUp wakes up to n waiters that match, fair across tenants; it returns
// how many it woke. match nil wakes any.
func (q *waitQueue) wakeUp(n int, match func(*waiter) bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	woke := 0
	for woke < n && len(q.ring) > 0 {
		found := false
		for k := 0; k < len(q.ring); k++ {
			i := (q.next + k) % len(q.ring)
			l := q.ring[i]
			for j, w := range l.ws {
				if match != nil && !match(w) {
					continue
				}
				l.ws = append(l.ws[:j], l.ws[j+1:]...)
				w.waiting = false
				if w.p != nil {
					// its queue limit becomes the wake: whichever the
					// placement's timer runs first is what it does
					q.sc.at(&w.p.tm, time.Time{}, w.p, timerWake, w.gen)
				} else {
					w.wake <- struct{}{}
				}
				woke++
				q.next = i + 1
				if len(l.ws) == 0 {
					q.dropLineLocked(i)
				}
				found = true
				break
			}
			if found {
				break
			}
		}
		if !found {
			break
		}
	}
	if len(q.ring) > 0 {
		q.next %= len(q.ring)
	} else {
		q.next = 0
	}
	if woke > 0 {
		q.lastWake.Store(time.Now().UnixNano())
	}
	return woke
}

// length is how many requests are in the queue.
func (q *waitQueue) length() int { return int(q.size.Load()) }

func (q *waitQueue) removeLocked(w *waiter) {
	w.waiting = false
	for i, l := range q.ring {
		if l.tenant != w.tenant {
			continue
		}
		for j, x := range l.ws {
			if x == w {
				l.ws = append(l.ws[:j], l.ws[j+1:]...)
				break
			}
		}
		if len(l.ws) == 0 {
			q.dropLineLocked(i)
		}
		return
	}
}

// dropLineLocked removes the empty line at ring index i, keeping the
// round-robin position on the tenant that came after it.
func (q *waitQueue) dropLineLocked(i int) {
	delete(q.tenants, q.ring[i].tenant)
	q.ring = append(q.ring[:i], q.ring[i+1:]...)
	if q.next > i {
		q.next--
	}
	if len(q.ring) > 0 {
		q.next %= len(q.ring)
	} else {
		q.next = 0
	}
}

// queueKickInterval: when no waiter was woken for this long, the router
// wakes the next one in fair order even without a slot-free signal, in case
// one was missed (a slot freed by another router's request shows only in
// the next heartbeat).
const queueKickInterval = 100 * time.Millisecond

// queueDeadlineMargin is how long before its deadline a queued request gives
// up (at most a tenth of its timeout), so the client gets the router's 429
// before its own deadline passes.
const queueDeadlineMargin = 100 * time.Millisecond

// queueWait parks the request in the queue until a slot may have freed
// (its timer wakes it and it decides again) or its limit passes. join: the
// request found room but others were waiting, so it queues behind them and
// the first of them (same capability and model, fair order) takes the
// room. It answers 429 at once when the queue is full, and when the
// request waited the policy's max_queue_ms, or just before its deadline.
func (p *placement) queueWait(join bool) {
	s := p.s
	now := time.Now()
	head := p.w != nil
	if p.w == nil {
		if !s.queue.enter() {
			s.stats.queueFull.Add(1)
			p.notPlaced(wire.Errorf(wire.CodeOverloaded, "no capacity for %s: %s busy and the router's queue is full (%d requests waiting); retry after a pause",
				p.inbound.Capability, p.fullNodes(), s.cfg.MaxQueue))
			return
		}
		p.w = newPlacementWaiter(p, now)
		s.stats.queued.Add(1)
	}
	p.maxWait = time.Duration(s.policy.Load().MaxQueueMs) * time.Millisecond
	limit := p.w.since.Add(p.maxWait)
	p.byDeadline = false
	if dl := p.deadline.Add(-min(queueDeadlineMargin, p.spec.EffectiveTimeout()/10)); dl.Before(limit) {
		limit, p.byDeadline = dl, true
	}
	w := p.w
	gen := p.park()
	s.queue.park(w, head, gen, limit)
	p.parked(gen)
	if join {
		// the first waiter of this capability and model, in fair order, looks
		// for room now: maybe this request itself
		s.queue.wakeUp(1, func(x *waiter) bool { return x.capability == w.capability && x.model == w.model })
	}
}

// queueTimeout is the 429 of a request whose queue limit passed.
func (p *placement) queueTimeout() error {
	s := p.s
	s.stats.queueTimeouts.Add(1)
	waited := time.Since(p.w.since).Milliseconds()
	if p.byDeadline {
		return wire.Errorf(wire.CodeOverloaded, "no capacity for %s: %s busy for %d ms, until just before the request's deadline; retry after a pause",
			p.inbound.Capability, p.fullNodes(), waited)
	}
	return wire.Errorf(wire.CodeOverloaded, "no capacity for %s: %s busy for %d ms (max_queue_ms %d); retry after a pause",
		p.inbound.Capability, p.fullNodes(), waited, p.maxWait.Milliseconds())
}

// fullNodes says how many eligible nodes were full, for a 429.
func (p *placement) fullNodes() string {
	switch p.full {
	case 0:
		return "every eligible node is"
	case 1:
		return "the 1 eligible node is"
	}
	return fmt.Sprintf("all %d eligible nodes are", p.full)
}

// leaveQueue takes a request that waited out of the queue, counts its wait,
// and passes on a wake it got but did not use. Once per placement.
func (p *placement) leaveQueue() {
	if p.w == nil || p.left {
		return
	}
	p.left = true
	s := p.s
	s.stats.queueWaitNs.Add(int64(time.Since(p.w.since)))
	s.stats.queueLeft.Add(1)
	if s.queue.leave(p.w) {
		s.queue.wakeUp(1, nil)
	}
}

// wakeFor wakes up to n queued requests the node serves (it has n free
// slots as far as this router knows).
func (s *Service) wakeFor(e *entry, n int) {
	if n <= 0 || s.queue.length() == 0 {
		return
	}
	s.cache.mu.RLock()
	node := e.node
	s.cache.mu.RUnlock()
	if node == nil {
		return
	}
	s.queue.wakeUp(n, func(w *waiter) bool { return serves(node, w.capability, w.model) })
}

// serves reports whether the node has a model for capability (and model
// when given).
func serves(n *record.Node, capability, model string) bool {
	for i := range n.Models {
		m := &n.Models[i]
		if (model == "" || m.ModelID == model) && m.Serves(capability) {
			return true
		}
	}
	return false
}

// kickQueue wakes the next request in fair order when nothing woke one for
// queueKickInterval (run every queueKickInterval).
func (s *Service) kickQueue(_ context.Context, now time.Time) {
	if s.queue.length() > 0 && now.Sub(time.Unix(0, s.queue.lastWake.Load())) >= queueKickInterval {
		s.queue.wakeUp(1, nil)
	}
}

// ackLoad is the load a node reported on a dispatch ack.
type ackLoad struct {
	inFlight, maxConc int // -1 when absent or not a valid count
}

// parseAckLoad reads Fed-In-Flight and Fed-Max-Concurrency from an ack. The
// node is trusted only so far: a value that is not a count in [0, 2^30]
// (max concurrency: [1, 2^30]) is ignored.
func parseAckLoad(h nats.Header) ackLoad {
	count := func(name string, least int) int {
		v := h.Get(name)
		if v == "" || len(v) > 10 {
			return -1
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < least || n > maxLoad {
			return -1
		}
		return n
	}
	return ackLoad{inFlight: count(wire.HdrInFlight, 0), maxConc: count(wire.HdrMaxConcurrency, 1)}
}

// learnAck updates the node's load from its ack at once, so the next
// decision (of any request) sees it: a busy node is full until a heartbeat
// or a completed outcome says otherwise. An accepted ack showing room wakes
// queued requests the node serves.
func (s *Service) learnAck(e *entry, h nats.Header, busy bool) {
	e.learnServerLoad(h)
	l := parseAckLoad(h)
	c := s.cache
	c.mu.RLock()
	stale := l.maxConc > 0 && e.ackConc != l.maxConc
	c.mu.RUnlock()
	if stale {
		c.mu.Lock()
		e.ackConc = l.maxConc
		e.refresh()
		c.mu.Unlock()
	}
	c.mu.RLock()
	conc := e.conc
	c.mu.RUnlock()
	switch {
	case busy && conc > 0:
		e.learnLoad(max(l.inFlight, conc))
	case l.inFlight >= 0:
		e.learnLoad(l.inFlight)
	}
	if !busy && conc > 0 {
		s.wakeFor(e, conc-e.inFlight())
	}
}
