package lifecycle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGuard(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name     string
		startErr error
		// calls after the first Start
		secondStart error
		stops       int32 // how often stop ran in total after two Stops
	}{
		{"ok", nil, ErrStarted, 1},
		{"failed start is undone once", boom, ErrStopped, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var g Guard
			var stops atomic.Int32
			start := func(context.Context) error { return c.startErr }
			stop := func() error { stops.Add(1); return nil }
			err := g.Start(context.Background(), start, stop)
			if c.startErr != nil {
				require.ErrorIs(t, err, c.startErr)
				assert.False(t, g.Running())
			} else {
				require.NoError(t, err)
				assert.True(t, g.Running())
			}
			assert.ErrorIs(t, g.Start(context.Background(), start, stop), c.secondStart)
			require.NoError(t, g.Stop(stop))
			require.NoError(t, g.Stop(stop))
			assert.Equal(t, c.stops, stops.Load())
			assert.ErrorIs(t, g.Start(context.Background(), start, stop), ErrStopped, "no Start after Stop")
		})
	}
}

func TestGuardStopBeforeStart(t *testing.T) {
	var g Guard
	ran := false
	require.NoError(t, g.Stop(func() error { ran = true; return nil }))
	assert.False(t, ran, "nothing to undo")
	assert.ErrorIs(t, g.Start(context.Background(), func(context.Context) error { return nil }, func() error { return nil }), ErrStopped)
}

func TestGroupRefusesAfterStop(t *testing.T) {
	g := NewGroup()
	var ran atomic.Int32
	require.True(t, g.Go(func(ctx context.Context) { <-ctx.Done(); ran.Add(1) }))
	g.Stop()
	assert.Equal(t, int32(1), ran.Load(), "Stop waits for its goroutines")
	assert.False(t, g.Go(func(context.Context) { ran.Add(1) }))
	g.Stop() // idempotent
	assert.Equal(t, int32(1), ran.Load())
	assert.Error(t, g.Context().Err())
}

func TestGroupDrain(t *testing.T) {
	t.Run("finishes within grace", func(t *testing.T) {
		g := NewGroup()
		release := make(chan struct{})
		g.Go(func(ctx context.Context) { <-release })
		go func() { time.Sleep(20 * time.Millisecond); close(release) }()
		assert.True(t, g.Drain(5*time.Second))
	})
	t.Run("cancelled after grace", func(t *testing.T) {
		g := NewGroup()
		g.Go(func(ctx context.Context) { <-ctx.Done() })
		assert.False(t, g.Drain(20*time.Millisecond))
		assert.False(t, g.Go(func(context.Context) {}))
	})
}

func TestGroupEvery(t *testing.T) {
	g := NewGroup()
	ticks := make(chan time.Time, 16)
	require.True(t, g.Every(time.Millisecond, func(_ context.Context, now time.Time) {
		select {
		case ticks <- now:
		default:
		}
	}))
	first, second := <-ticks, <-ticks
	assert.True(t, second.After(first))
	g.Stop()
	for len(ticks) > 0 {
		<-ticks
	}
	time.Sleep(5 * time.Millisecond)
	assert.Empty(t, ticks, "no tick after Stop")
	assert.False(t, g.Every(time.Millisecond, func(context.Context, time.Time) {}))
}

func TestGroupWithCause(t *testing.T) {
	why := errors.New("draining")
	g := NewGroupWithCause(why)
	child, cancel := context.WithCancel(g.Context())
	defer cancel()
	g.Stop()
	assert.ErrorIs(t, context.Cause(child), why, "work derived from the group learns why it was cut")
	plain := NewGroup()
	plain.Stop()
	assert.ErrorIs(t, context.Cause(plain.Context()), context.Canceled)
}

func TestGroupDo(t *testing.T) {
	t.Run("runs on the caller's goroutine and is waited for", func(t *testing.T) {
		g := NewGroup()
		inside := make(chan struct{})
		release := make(chan struct{})
		var ran atomic.Int32
		var ctxErr error
		go g.Do(func(ctx context.Context) {
			close(inside)
			<-release
			ctxErr = ctx.Err()
			ran.Add(1)
		})
		<-inside
		drained := make(chan bool)
		go func() { drained <- g.Drain(5 * time.Second) }()
		select {
		case <-drained:
			t.Fatal("Drain returned while Do's fn was running")
		case <-time.After(30 * time.Millisecond):
		}
		close(release)
		assert.True(t, <-drained)
		assert.Equal(t, int32(1), ran.Load())
		assert.NoError(t, ctxErr, "fn finished within the grace: its context was not cut")
	})
	t.Run("refused once closing", func(t *testing.T) {
		g := NewGroup()
		g.Close()
		var ran atomic.Int32
		assert.False(t, g.Do(func(context.Context) { ran.Add(1) }))
		assert.Equal(t, int32(0), ran.Load())
	})
	t.Run("fn's context ends when Drain's grace runs out", func(t *testing.T) {
		g := NewGroup()
		inside := make(chan struct{})
		done := make(chan error, 1)
		go g.Do(func(ctx context.Context) { close(inside); <-ctx.Done(); done <- ctx.Err() })
		<-inside
		assert.False(t, g.Drain(20*time.Millisecond))
		assert.ErrorIs(t, <-done, context.Canceled)
	})
}
