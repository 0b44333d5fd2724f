package devmesh

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Issue 14's demo target: with the default policy, chat requests sent right
// after the mesh starts go to the fastest eligible node (the h100). Each
// node's warm-up has measured its server's first token by the time the mesh
// is up, so no request goes to a slower node to find out.
func TestSimDemoPlacesOnFastest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, servers, err := SimDemoNodes(ctx, 1, natsembed.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, StopSimServers(servers)) })
	s := natsembed.StartForTest(t)
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = time.Second },
		Health:  func(c *health.Config) {}})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	const fastest = "us-west-gpu-1"
	require.Equal(t, simserver.H100, demoProfiles[fastest], "the demo's fastest node")
	const n = 20
	got := make([]string, 0, n)
	for i := range n {
		r := client.Request{Capability: wire.CapGenerate, Model: DemoChatModel,
			Body: []byte(fmt.Sprintf("question %d: why is the sky blue?", i))}
		var res *client.Response
		natsembed.Eventually(t, 10*time.Second, func() error {
			var err error
			res, err = c.Infer(ctx, r)
			return err
		})
		got = append(got, res.Node)
	}
	t.Logf("placements: %v", got)
	for i, node := range got {
		assert.Equal(t, fastest, node, "request %d; placements %v", i, got)
	}
}
