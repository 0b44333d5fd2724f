package router

import (
	"slices"
	"sync"
	"time"
)

// answered remembers, per request, what the nodes recently said of it in
// their completion outcomes: that one answered the client (a non-silent
// outcome), or which nodes sent the client nothing (silent). A router that
// lost an attempt's ack cannot tell whether the node took the request:
// before it sends the client its own final error it waits for that node's
// outcome. When the node answered it sends nothing, so the client gets
// exactly one final; when every uncertain node reported silent it answers at
// once; only when a node says nothing at all does it wait out the grace.
// The wait holds no goroutine: the placement parks here and mark (or its
// grace timer) moves it on.
type answered struct {
	mu      sync.Mutex
	reqs    map[string]*heard
	order   []string // ring of request ids, oldest first, bounding reqs
	next    int
	waiters map[string][]graceWaiter
}

// heard is what the outcomes said of one request.
type heard struct {
	answered bool
	silent   []string // nodes whose outcome was silent
}

// graceWaiter is a placement in its finals grace (wait gen), waiting to
// hear of its uncertain nodes.
type graceWaiter struct {
	p     *placement
	gen   uint64
	nodes []string
}

// answeredKeep bounds how many recent requests are remembered.
const answeredKeep = 8192

// finalGrace bounds how long a router waits for an uncertain attempt's node
// to report its outcome, before sending its own final error. It is long
// because it is rarely waited out: a live node reports within milliseconds
// (answered, or silent once the router's cancel reached it); only a node
// that died with the request, or whose outcome is held up in a reconnect,
// makes the router wait. 300 ms was too short for the second case: a
// JetStream meta-leader kill in chaos-short delayed a node's outcome past
// it, and the client got the node's done and then the router's 503.
const finalGrace = 2 * time.Second

// minFinalGrace is the wait even when the request's deadline has passed.
const minFinalGrace = 50 * time.Millisecond

func newAnswered() *answered {
	return &answered{reqs: map[string]*heard{}, order: make([]string, answeredKeep), waiters: map[string][]graceWaiter{}}
}

// mark records that node reported its outcome of requestID: it answered the
// client, or (silent) it sent nothing. It ends the grace of the placements
// waiting for the request once what they wait for is known.
func (a *answered) mark(requestID, node string, silent bool) {
	a.mu.Lock()
	h := a.reqs[requestID]
	if h == nil {
		if old := a.order[a.next]; old != "" {
			delete(a.reqs, old)
		}
		a.order[a.next] = requestID
		a.next = (a.next + 1) % len(a.order)
		h = &heard{}
		a.reqs[requestID] = h
	}
	if !silent {
		h.answered = true
	} else if !slices.Contains(h.silent, node) && len(h.silent) < maxHeardSilent {
		h.silent = append(h.silent, node)
	}
	ws := a.waiters[requestID]
	var ready []graceWaiter
	if len(ws) > 0 {
		keep := ws[:0]
		for _, w := range ws {
			if h.settles(w.nodes) {
				ready = append(ready, w)
			} else {
				keep = append(keep, w)
			}
		}
		if len(keep) == 0 {
			delete(a.waiters, requestID)
		} else {
			a.waiters[requestID] = keep
		}
	}
	ans := h.answered
	a.mu.Unlock()
	for _, w := range ready {
		w.p.heardDuring(w.gen, ans)
	}
}

// maxHeardSilent bounds the silent nodes kept per request (a request has
// at most a few attempts; outcomes are not trusted to be few).
const maxHeardSilent = 16

// settles reports whether h ends a wait for nodes: one answered, or every
// one of nodes reported silent.
func (h *heard) settles(nodes []string) bool {
	if h.answered {
		return true
	}
	for _, n := range nodes {
		if !slices.Contains(h.silent, n) {
			return false
		}
	}
	return true
}

// has reports whether a node answered requestID.
func (a *answered) has(requestID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.reqs[requestID]
	return h != nil && h.answered
}

// await reports whether what was heard of requestID already settles a wait
// for nodes (settled) and whether a node answered it. When not settled, p
// (in wait gen) waits: mark will call p.heardDuring(gen, answered).
func (a *answered) await(requestID string, nodes []string, p *placement, gen uint64) (settled, ans bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.reqs[requestID]; h != nil && h.settles(nodes) {
		return true, h.answered
	}
	a.waiters[requestID] = append(a.waiters[requestID], graceWaiter{p: p, gen: gen, nodes: nodes})
	return false, false
}

// unreported is nodes without those that reported silent for requestID,
// each once.
func (a *answered) unreported(requestID string, nodes []string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.reqs[requestID]
	var out []string
	for _, n := range nodes {
		if !slices.Contains(out, n) && (h == nil || !slices.Contains(h.silent, n)) {
			out = append(out, n)
		}
	}
	return out
}

// forget stops p waiting for requestID (its grace ran out).
func (a *answered) forget(requestID string, p *placement) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ws := a.waiters[requestID]
	for i, w := range ws {
		if w.p == p {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(a.waiters, requestID)
	} else {
		a.waiters[requestID] = ws
	}
}
