package health

import (
	"context"
	"testing"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Start runs once; Stop is idempotent and refuses a later Start.
func TestStartOnceStopIdempotent(t *testing.T) {
	h := newHarness(t)
	s, err := New(natsembed.ConnectForTest(t, h.srv), testConfig(), natsembed.Logger(t))
	require.NoError(t, err)
	require.NoError(t, s.Start(t.Context()))
	assert.ErrorIs(t, s.Start(t.Context()), lifecycle.ErrStarted)
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop())
	assert.ErrorIs(t, s.Start(t.Context()), lifecycle.ErrStopped)
}

// A failed Start leaves nothing running, and Stop after it is a no-op.
func TestFailedStartIsUndone(t *testing.T) {
	h := newHarness(t)
	nc := natsembed.ConnectForTest(t, h.srv)
	s, err := New(nc, testConfig(), natsembed.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Error(t, s.Start(ctx))
	require.NoError(t, s.Stop())
	assert.Zero(t, nc.NumSubscriptions(), "no subscription left behind")
	assert.False(t, s.group.Go(func(context.Context) {}), "the goroutine group is stopped")
}
