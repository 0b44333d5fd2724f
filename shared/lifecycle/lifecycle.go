// Package lifecycle is the one way a fedmesh service starts, owns its
// goroutines and stops. A Service's Start runs once and is all-or-nothing;
// Stop is idempotent and safe after a failed Start; every goroutine the
// service runs belongs to a Group that refuses new work once stopping and
// waits for what it started.
package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Errors of Guard.Start.
var (
	ErrStarted = errors.New("already started")
	ErrStopped = errors.New("already stopped")
)

// Guard orders a service's Start and Stop. The zero value is ready to use.
//
//	func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }
//	func (s *Service) Stop() error                     { return s.life.Stop(s.stop) }
//
// start brings everything up; when it fails, stop runs at once to undo
// whatever start did, so stop must cope with a partial start (nil checks).
// stop runs at most once over the Guard's life.
type Guard struct {
	mu    sync.Mutex
	state int // 0 new, 1 running, 2 stopped
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

// Start runs start once. A second Start, or one after Stop, is refused.
func (g *Guard) Start(ctx context.Context, start func(context.Context) error, stop func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.state {
	case stateRunning:
		return ErrStarted
	case stateStopped:
		return ErrStopped
	}
	if err := start(ctx); err != nil {
		g.state = stateStopped
		return errors.Join(err, stop())
	}
	g.state = stateRunning
	return nil
}

// Stop runs stop if Start succeeded and Stop has not run yet; otherwise it
// only marks the Guard stopped (a later Start is refused) and returns nil.
func (g *Guard) Stop(stop func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.state
	g.state = stateStopped
	if was != stateRunning {
		return nil
	}
	return stop()
}

// Running reports whether Start succeeded and Stop has not been called.
func (g *Guard) Running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == stateRunning
}

// Group owns a set of goroutines that share one context. Go refuses new
// goroutines once Close or Stop has been called, so nothing starts after a
// service began to stop (the gate that orders WaitGroup.Add before Wait).
// The zero value is not usable: make one with NewGroup.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	closing bool
	wg      sync.WaitGroup
}

// NewGroup returns a Group whose context is not derived from any caller's:
// a service's goroutines outlive the ctx its Start was given, which only
// bounds start-up.
func NewGroup() *Group { return NewGroupWithCause(context.Canceled) }

// NewGroupWithCause is NewGroup whose context ends with cause
// (context.Cause), so work whose context derives from the group's can tell
// why it was cut.
func NewGroupWithCause(cause error) *Group {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Group{ctx: ctx, cancel: func() { cancel(cause) }}
}

// Context is cancelled when the group stops.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn on a new goroutine with the group's context. It returns false,
// and does not run fn, once the group is closing.
func (g *Group) Go(fn func(ctx context.Context)) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closing {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
	return true
}

// Do runs fn on the caller's goroutine with the group's context, counted
// as one of the group's own: Drain and Stop wait for it as for a goroutine
// of Go. It is for work short enough to run where it arrived (a node
// agent's answer from a backend that never blocks), which a goroutine would
// only delay. It returns false, and does not run fn, once the group is
// closing.
func (g *Group) Do(fn func(ctx context.Context)) bool {
	g.mu.RLock()
	if g.closing {
		g.mu.RUnlock()
		return false
	}
	g.wg.Add(1)
	g.mu.RUnlock() // not held while fn runs: Close must not wait for it
	defer g.wg.Done()
	fn(g.ctx)
	return true
}

// Close refuses further Go calls; running goroutines go on.
func (g *Group) Close() {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
}

// Stop refuses further Go calls, cancels the context and waits for every
// goroutine to return. It is idempotent.
func (g *Group) Stop() {
	g.Close()
	g.cancel()
	g.wg.Wait()
}

// Drain refuses further Go calls and gives the running goroutines up to
// grace to finish on their own; then it cancels the context and waits for
// them. It reports whether they all finished within grace.
func (g *Group) Drain(grace time.Duration) bool {
	g.Close()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	finished := true
	if grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-done:
		case <-t.C:
			finished = false
		}
		t.Stop()
	} else {
		select {
		case <-done:
		default:
			finished = false
		}
	}
	g.cancel()
	<-done
	return finished
}

// Every runs fn on a goroutine of the group every interval until the group
// stops: the one periodic loop (sweeps, heartbeats). It returns false, and
// runs nothing, once the group is closing.
func (g *Group) Every(interval time.Duration, fn func(ctx context.Context, now time.Time)) bool {
	return g.Go(func(ctx context.Context) {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				fn(ctx, now)
			}
		}
	})
}
