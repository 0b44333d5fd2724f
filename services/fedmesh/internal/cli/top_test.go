package cli

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/tui"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const testHeartbeat = 100 * time.Millisecond

// startDemoMesh runs the three demo nodes on an embedded server with fast
// heartbeats, as the e2e harness does.
func startDemoMesh(t *testing.T) *server.Server {
	t.Helper()
	s := natsembed.StartForTest(t)
	nodes := devmesh.DemoNodes()
	for i := range nodes {
		nodes[i].HeartbeatInterval = testHeartbeat
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mesh, err := devmesh.Start(ctx, devmesh.Options{
		Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * testHeartbeat },
		Health:  func(c *health.Config) { c.HeartbeatInterval = testHeartbeat },
	})
	require.NoError(t, err)
	t.Cleanup(mesh.Stop)
	return s
}

func TestTopAgainstRealMesh(t *testing.T) {
	s := startDemoMesh(t)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	infer := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hello")})
		return err
	}
	natsembed.Eventually(t, 10*time.Second, func() error {
		if err := infer(); err != nil {
			return fmt.Errorf("mesh never served a request: %w", err)
		}
		return nil
	})
	require.NoError(t, infer())

	f := &natsFetcher{nc: nc, subj: subject.Default, url: s.ClientURL()}
	var snap tui.Snapshot
	natsembed.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		snap, err = f.Fetch(ctx)
		return natsembed.Check(err == nil && len(snap.Nodes) == 3 && snap.Totals.TotalRequests >= 2,
			"last snapshot %+v, err %v", snap, err)
	})

	ids := map[string]tui.Node{}
	for _, n := range snap.Nodes {
		ids[n.ID] = n
	}
	for _, want := range devmesh.DemoNodes() {
		n, ok := ids[want.NodeID]
		require.True(t, ok, "node %s in the snapshot", want.NodeID)
		assert.Equal(t, want.Region, n.Region)
		assert.True(t, n.Registered)
		assert.NotEmpty(t, n.Models)
		assert.Equal(t, record.CircuitClosed, n.Circuit)
	}
	// Two requests may land on two nodes, none healthy yet: any state, as long as it is shown.
	assert.Contains(t, []string{record.MeshInitializing, record.MeshReady, record.MeshDegraded}, snap.Mesh)
	assert.NotEmpty(t, snap.NATSURL)
	var perNode int64
	for _, n := range snap.Nodes {
		perNode += n.Requests
	}
	assert.GreaterOrEqual(t, perNode, int64(2), "per-node counters from fed.stats")

	t.Run("once", func(t *testing.T) {
		var out bytes.Buffer
		root := NewRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"top", "--once", "--sort", "requests", "--nats-url", s.ClientURL()})
		require.NoError(t, root.ExecuteContext(context.Background()))
		frame := out.String()
		for _, n := range devmesh.DemoNodes() {
			assert.Contains(t, frame, n.NodeID)
		}
		assert.Contains(t, frame, "REQS▼")
		assert.Regexp(t, `mesh (initializing|ready|degraded)`, frame)
		assert.NotContains(t, frame, "\x1b[", "plain text")
	})

	t.Run("nodes and stats still work", func(t *testing.T) {
		for _, args := range [][]string{{"nodes"}, {"stats"}} {
			var out bytes.Buffer
			root := NewRoot()
			root.SetOut(&out)
			root.SetArgs(append(args, "--nats-url", s.ClientURL()))
			require.NoError(t, root.ExecuteContext(context.Background()), "%v", args)
			assert.Contains(t, out.String(), "us-west-gpu-1", "%v", args)
		}
	})
}

func TestTopOnceWithoutMeshFails(t *testing.T) {
	s := natsembed.StartForTest(t) // a server, but nothing answers fed.catalog.list
	var out bytes.Buffer
	root := NewRoot()
	root.SetOut(&out)
	root.SetArgs([]string{"top", "--once", "--timeout", "2s", "--nats-url", s.ClientURL()})
	err := root.ExecuteContext(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no responders")
	assert.Empty(t, out.String())
}
