package router

import (
	"context"
	"sync"
	"time"
)

// answered remembers the requests a node recently sent its final for (its
// completed outcome, not silent). A router that lost an attempt's ack cannot
// tell whether the node took the request: before it sends the client its own
// final error it waits briefly for such an outcome, and when the node did
// answer it sends nothing, so the client gets exactly one final.
type answered struct {
	mu      sync.Mutex
	ids     map[string]struct{}
	order   []string // ring of ids, oldest first, bounding ids
	next    int
	waiters map[string][]chan struct{}
}

// answeredKeep bounds how many recent answers are remembered.
const answeredKeep = 8192

// finalGrace bounds how long a router waits for an uncertain attempt's node
// to show that it answered, before sending its own final error.
const finalGrace = 300 * time.Millisecond

// minFinalGrace is the wait even when the request's deadline has passed.
const minFinalGrace = 50 * time.Millisecond

func newAnswered() *answered {
	return &answered{ids: map[string]struct{}{}, order: make([]string, answeredKeep), waiters: map[string][]chan struct{}{}}
}

// mark records that requestID got a node's final.
func (a *answered) mark(requestID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.ids[requestID]; !ok {
		if old := a.order[a.next]; old != "" {
			delete(a.ids, old)
		}
		a.order[a.next] = requestID
		a.next = (a.next + 1) % len(a.order)
		a.ids[requestID] = struct{}{}
	}
	for _, ch := range a.waiters[requestID] {
		close(ch)
	}
	delete(a.waiters, requestID)
}

// wait reports whether requestID got a node's final, waiting up to d.
func (a *answered) wait(ctx context.Context, requestID string, d time.Duration) bool {
	a.mu.Lock()
	if _, ok := a.ids[requestID]; ok {
		a.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	a.waiters[requestID] = append(a.waiters[requestID], ch)
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
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
	_, ok := a.ids[requestID]
	return ok
}
