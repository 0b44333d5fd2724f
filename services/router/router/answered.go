package router

import (
	"context"
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
type answered struct {
	mu      sync.Mutex
	reqs    map[string]*heard
	order   []string // ring of request ids, oldest first, bounding reqs
	next    int
	waiters map[string][]chan struct{}
}

// heard is what the outcomes said of one request.
type heard struct {
	answered bool
	silent   []string // nodes whose outcome was silent
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
	return &answered{reqs: map[string]*heard{}, order: make([]string, answeredKeep), waiters: map[string][]chan struct{}{}}
}

// mark records that node reported its outcome of requestID: it answered the
// client, or (silent) it sent nothing.
func (a *answered) mark(requestID, node string, silent bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
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
	for _, ch := range a.waiters[requestID] {
		close(ch)
	}
	delete(a.waiters, requestID)
}

// maxHeardSilent bounds the silent nodes kept per request (a request has
// at most a few attempts; outcomes are not trusted to be few).
const maxHeardSilent = 16

// state reports whether requestID was answered, and whether every one of
// nodes reported silent; a.mu held.
func (a *answered) state(requestID string, nodes []string) (ans, allSilent bool) {
	h := a.reqs[requestID]
	if h == nil {
		return false, false
	}
	if h.answered {
		return true, false
	}
	for _, n := range nodes {
		if !slices.Contains(h.silent, n) {
			return false, false
		}
	}
	return false, true
}

// wait reports whether a node answered requestID, waiting up to d for it
// or for each of nodes (the uncertain attempts) to report silent.
func (a *answered) wait(ctx context.Context, requestID string, nodes []string, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		a.mu.Lock()
		if ans, allSilent := a.state(requestID, nodes); ans || allSilent {
			a.mu.Unlock()
			return ans
		}
		ch := make(chan struct{})
		a.waiters[requestID] = append(a.waiters[requestID], ch)
		a.mu.Unlock()
		select {
		case <-ch:
			continue // something was heard of the request: look again
		case <-t.C:
		case <-ctx.Done():
		}
		a.mu.Lock()
		a.unwait(requestID, ch)
		ans, _ := a.state(requestID, nodes)
		a.mu.Unlock()
		return ans
	}
}

// unwait removes ch from requestID's waiters; a.mu held.
func (a *answered) unwait(requestID string, ch chan struct{}) {
	ws := a.waiters[requestID]
	for i, w := range ws {
		if w == ch {
			a.waiters[requestID] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(a.waiters[requestID]) == 0 {
		delete(a.waiters, requestID)
	}
}
