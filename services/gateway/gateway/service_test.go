package gateway

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

func TestLifecycle(t *testing.T) {
	nc := natsembed.ConnectForTest(t, natsembed.StartForTest(t))
	newGateway := func(addr string) *Service {
		gw, err := New(nc, Config{Addr: addr}, natsembed.Logger(t))
		require.NoError(t, err)
		return gw
	}

	t.Run("start once, stop twice", func(t *testing.T) {
		gw := newGateway("127.0.0.1:0")
		require.NoError(t, gw.Start(context.Background()))
		assert.ErrorIs(t, gw.Start(context.Background()), lifecycle.ErrStarted)
		addr := gw.Addr()
		require.NoError(t, gw.Stop())
		require.NoError(t, gw.Stop(), "Stop is idempotent")
		_, err := net.Dial("tcp", addr)
		assert.Error(t, err, "a stopped gateway does not listen")
	})

	t.Run("failed start leaves nothing behind", func(t *testing.T) {
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer taken.Close()
		gw := newGateway(taken.Addr().String())
		subs := nc.NumSubscriptions()
		require.Error(t, gw.Start(context.Background()))
		assert.Equal(t, subs, nc.NumSubscriptions(), "the SDK client's reply subscription is gone again")
		require.NoError(t, gw.Stop(), "Stop after a failed Start")
	})
}
