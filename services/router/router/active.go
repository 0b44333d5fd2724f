package router

import (
	"sync"
	"time"
)

// active tracks the placements in progress, which run on no goroutine of
// their own: whoever moves a placement on (the infer handler, the ack
// subscription, the scheduler) owns it until it waits again. It is what
// Stop waits for, and what it aborts once StopTimeout is over. A placement
// is in it from begin until done; after close, begin refuses, so nothing
// starts once Stop began waiting.
type active struct {
	mu      sync.Mutex
	head    *placement // intrusive list: no allocation per request
	n       int
	closing bool
	idle    chan struct{} // closed when the last placement ends after close
}

// begin adds p; false once the router is stopping.
func (a *active) begin(p *placement) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	p.next, p.prev = a.head, nil
	if a.head != nil {
		a.head.prev = p
	}
	a.head = p
	a.n++
	p.tracked = true
	return true
}

// end removes p, which has ended.
func (a *active) end(p *placement) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.prev != nil {
		p.prev.next = p.next
	} else if a.head == p {
		a.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.next, p.prev = nil, nil
	a.n--
	if a.n == 0 && a.closing && a.idle != nil {
		close(a.idle)
		a.idle = nil
	}
}

func (a *active) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// has reports whether a placement of request id is in progress (a walk of
// the list: only a held question asks, DESIGN §3.8).
func (a *active) has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p := a.head; p != nil; p = p.next {
		if p.inbound.ID == id {
			return true
		}
	}
	return false
}

// close refuses new placements.
func (a *active) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return
	}
	a.closing = true
	if a.n > 0 {
		a.idle = make(chan struct{})
	}
}

// wait waits up to d for every placement to end (close first); it reports
// whether they did.
func (a *active) wait(d time.Duration) bool {
	a.mu.Lock()
	idle := a.idle
	n := a.n
	a.mu.Unlock()
	if n == 0 || idle == nil {
		return true
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}

// all returns the placements in progress.
func (a *active) all() []*placement {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := make([]*placement, 0, a.n)
	for p := a.head; p != nil; p = p.next {
		ps = append(ps, p)
	}
	return ps
}
