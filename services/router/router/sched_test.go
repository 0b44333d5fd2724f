package router

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// fired records what the scheduler fired.
type fired struct {
	mu  sync.Mutex
	got []firing
}

type firing struct {
	kind timerKind
	gen  uint64
	at   time.Time
}

func (f *fired) fire(kind timerKind, gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, firing{kind, gen, time.Now()})
}

func (f *fired) all() []firing {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]firing(nil), f.got...)
}

func runSched(t *testing.T) *sched {
	s := newSched()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func TestSchedFiresInOrder(t *testing.T) {
	s := runSched(t)
	rec := &fired{}
	const n = 200
	timers := make([]timer, n)
	start := time.Now()
	order := rand.Perm(n)
	for _, i := range order { // scheduled in random order, due a quarter ms apart
		timers[i].idx = -1
		s.at(&timers[i], start.Add(20*time.Millisecond+time.Duration(i)*time.Millisecond/4), rec, timerRetry, uint64(i+1))
	}
	// every other one cancelled
	for i := 0; i < n; i += 2 {
		s.cancel(&timers[i], uint64(i+1))
	}
	natsembed.Eventually(t, 3*time.Second, func() error {
		return natsembed.Check(len(rec.all()) == n/2 && s.len() == 0, "fired %d of %d, %d scheduled", len(rec.all()), n/2, s.len())
	})
	got := rec.all()
	for j, f := range got {
		want := uint64(2*j + 2) // the odd indexes, in due order
		require.Equal(t, want, f.gen, "firing %d", j)
		due := start.Add(20*time.Millisecond + time.Duration(f.gen-1)*time.Millisecond/4)
		assert.False(t, f.at.Before(due), "timer %d fired %s early", f.gen, due.Sub(f.at))
	}
}

func TestSchedGenerations(t *testing.T) {
	cases := []struct {
		name string
		run  func(s *sched, tm *timer, rec *fired)
		want []timerKind // what fires, in order
	}{
		{"a later wait replaces an earlier one", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(time.Hour), rec, timerAck, 1)
			s.at(tm, time.Now().Add(5*time.Millisecond), rec, timerRetry, 2)
		}, []timerKind{timerRetry}},
		{"an older wait cannot move a newer one", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(5*time.Millisecond), rec, timerRetry, 2)
			s.at(tm, time.Now().Add(time.Hour), rec, timerAck, 1)
		}, []timerKind{timerRetry}},
		{"cancel of an older wait leaves a newer one", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(5*time.Millisecond), rec, timerQueue, 3)
			s.cancel(tm, 2)
		}, []timerKind{timerQueue}},
		{"cancel of its own wait", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(5*time.Millisecond), rec, timerQueue, 3)
			s.cancel(tm, 3)
		}, nil},
		{"a wake replaces the queue limit", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(time.Hour), rec, timerQueue, 4)
			s.at(tm, time.Time{}, rec, timerWake, 4)
		}, []timerKind{timerWake}},
		{"expedite fires an ack timer now", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(time.Hour), rec, timerAck, 5)
			s.expedite(tm, 5)
		}, []timerKind{timerAck}},
		{"expedite leaves a finals grace", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(time.Hour), rec, timerGrace, 5)
			s.expediteAny(tm)
		}, nil},
		{"expedite of another wait changes nothing", func(s *sched, tm *timer, rec *fired) {
			s.at(tm, time.Now().Add(time.Hour), rec, timerAck, 6)
			s.expedite(tm, 5)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := runSched(t)
			rec := &fired{}
			tm := &timer{idx: -1}
			tc.run(s, tm, rec)
			if tc.want == nil {
				natsembed.Never(t, 100*time.Millisecond, func() error {
					return natsembed.Check(len(rec.all()) == 0, "fired %+v", rec.all())
				})
				return
			}
			natsembed.Eventually(t, 2*time.Second, func() error {
				return natsembed.Check(len(rec.all()) == len(tc.want), "fired %+v", rec.all())
			})
			var kinds []timerKind
			for _, f := range rec.all() {
				kinds = append(kinds, f.kind)
			}
			assert.Equal(t, tc.want, kinds)
			s.mu.Lock()
			defer s.mu.Unlock()
			assert.Empty(t, s.heap, "a fired timer leaves the heap")
		})
	}
}

// A timer due later than the one the goroutine sleeps for needs no kick,
// but still fires on time once the earlier one is cancelled.
func TestSchedLaterTimerAfterCancel(t *testing.T) {
	s := runSched(t)
	rec := &fired{}
	a, b := &timer{idx: -1}, &timer{idx: -1}
	s.at(a, time.Now().Add(30*time.Millisecond), rec, timerAck, 1)
	s.cancel(a, 1)
	due := time.Now().Add(60 * time.Millisecond)
	s.at(b, due, rec, timerAck, 1)
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(len(rec.all()) == 1, "fired %+v", rec.all())
	})
	f := rec.all()[0]
	assert.False(t, f.at.Before(due))
	assert.Less(t, f.at.Sub(due), 500*time.Millisecond)
}
