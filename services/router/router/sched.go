package router

import (
	"context"
	"sync"
	"time"
)

// sched runs the timed steps of every placement on one goroutine: ack
// timeouts, retry delays, queue limits, the finals grace and the wakes of
// queued requests. A placement waits on at most one timer at a time, kept
// in the placement itself (placement.tm), so scheduling allocates nothing;
// the timers form a min-heap on their instant and the goroutine sleeps
// until the earliest.
type sched struct {
	mu   sync.Mutex
	heap []*timer
	// armed is when the goroutine wakes next (zero: not before a kick).
	// A timer due no earlier needs no kick: the goroutine finds it then.
	// So a stream of ack deadlines, each cancelled by its ack, wakes the
	// goroutine about once per ack timeout, not once per request.
	armed time.Time
	// kick wakes the goroutine when a timer earlier than armed arrives;
	// buffered 1, so a schedule never blocks.
	kick chan struct{}
}

// timerKind is what a placement does when its timer fires.
type timerKind uint8

const (
	timerAck         timerKind = iota + 1 // the ack did not come by Fed-Ack-Deadline
	timerRetry                            // the retry delay after a failed attempt is over
	timerQueue                            // max_queue_ms (or the deadline margin) passed in the queue
	timerWake                             // a slot freed: the queued request decides again
	timerGrace                            // the finals grace after an uncertain attempt is over
	timerStatus                           // the node did not answer the status question of a lost ack
	timerGraceStatus                      // the uncertain nodes did not all answer the status question at the grace's end
)

// timer is one placement's pending timed step. Its fields change only
// under sched.mu.
type timer struct {
	when time.Time
	idx  int // index in sched.heap; -1 when not scheduled
	p    firer
	kind timerKind
	gen  uint64 // the placement's wait this timer ends (placement.waiting)
}

// firer is what a timer moves on: a placement (an interface so the
// scheduler can be tested alone).
type firer interface {
	fire(kind timerKind, gen uint64)
}

func newSched() *sched { return &sched{kick: make(chan struct{}, 1)} }

// at schedules t to fire p.fire(kind, gen) at when, replacing whatever t
// was scheduled for. A zero when fires as soon as the goroutine gets to it.
// A placement's waits have rising generations: a call for an older wait
// than the one t serves changes nothing, so a party that lost the race for
// the placement can never move the timer of its next wait.
func (s *sched) at(t *timer, when time.Time, p firer, kind timerKind, gen uint64) {
	s.mu.Lock()
	if gen < t.gen {
		s.mu.Unlock()
		return
	}
	t.when, t.p, t.kind, t.gen = when, p, kind, gen
	if s.scheduledLocked(t) {
		s.fixLocked(t.idx)
	} else {
		t.idx = len(s.heap)
		s.heap = append(s.heap, t)
		s.upLocked(t.idx)
	}
	kick := s.heap[0] == t && (s.armed.IsZero() || when.Before(s.armed))
	if kick {
		s.armed = when
	}
	s.mu.Unlock()
	if kick {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// cancel unschedules t if it serves wait gen or an older one; nothing when
// it fired or was never scheduled.
func (s *sched) cancel(t *timer, gen uint64) {
	s.mu.Lock()
	if s.scheduledLocked(t) && t.gen <= gen {
		s.removeLocked(t.idx)
	}
	s.mu.Unlock()
}

// expedite makes t of wait gen fire now (Stop cutting waits short), except
// a finals grace and the status questions at its end, which run out: the
// node may still show it answered.
func (s *sched) expedite(t *timer, gen uint64) {
	s.mu.Lock()
	if s.scheduledLocked(t) && t.gen == gen && t.kind != timerGrace && t.kind != timerGraceStatus {
		t.when = time.Time{}
		s.fixLocked(t.idx)
		s.armed = t.when
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// expediteAny is expedite for whatever wait t serves now.
func (s *sched) expediteAny(t *timer) {
	s.mu.Lock()
	gen := t.gen
	s.mu.Unlock()
	s.expedite(t, gen)
}

func (s *sched) scheduledLocked(t *timer) bool {
	return t.idx >= 0 && t.idx < len(s.heap) && s.heap[t.idx] == t
}

// len is how many timers are scheduled.
func (s *sched) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heap)
}

// run fires the timers as they come due until ctx ends. The steps it runs
// never block for long: they publish and decide, nothing waits.
func (s *sched) run(ctx context.Context) {
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		if len(s.heap) > 0 && !s.heap[0].when.After(now) {
			t := s.heap[0]
			s.removeLocked(0)
			// copied under the lock: the placement's owner may schedule t
			// again as soon as the lock is released
			p, kind, gen := t.p, t.kind, t.gen
			s.mu.Unlock()
			p.fire(kind, gen)
			continue
		}
		sleep := time.Duration(-1)
		s.armed = time.Time{}
		if len(s.heap) > 0 {
			sleep = s.heap[0].when.Sub(now)
			s.armed = s.heap[0].when
		}
		s.mu.Unlock()
		if sleep >= 0 {
			wait.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			wait.Stop()
			return
		case <-wait.C:
		case <-s.kick:
			wait.Stop()
		}
	}
}

func (s *sched) less(i, j int) bool { return s.heap[i].when.Before(s.heap[j].when) }

func (s *sched) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.heap[i].idx, s.heap[j].idx = i, j
}

func (s *sched) upLocked(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			return
		}
		s.swap(i, parent)
		i = parent
	}
}

// downLocked reports whether the element at i moved.
func (s *sched) downLocked(i int) bool {
	start, n := i, len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && s.less(r, l) {
			c = r
		}
		if !s.less(c, i) {
			break
		}
		s.swap(i, c)
		i = c
	}
	return i > start
}

func (s *sched) fixLocked(i int) {
	if !s.downLocked(i) {
		s.upLocked(i)
	}
}

func (s *sched) removeLocked(i int) {
	last := len(s.heap) - 1
	t := s.heap[i]
	if i != last {
		s.swap(i, last)
	}
	s.heap[last] = nil
	s.heap = s.heap[:last]
	if i != last {
		s.fixLocked(i)
	}
	t.idx = -1
}
