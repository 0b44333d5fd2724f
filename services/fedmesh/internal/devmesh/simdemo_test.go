package devmesh

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// The demo mesh on simulated servers answers chat (on any node), code and
// embed requests.
func TestSimDemoNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, servers, err := SimDemoNodes(ctx, 1, natsembed.Logger(t))
	require.NoError(t, err)
	require.Len(t, servers, 3)
	t.Cleanup(func() { assert.NoError(t, StopSimServers(servers)) })
	for i := range nodes {
		nodes[i].HeartbeatInterval = 100 * time.Millisecond
	}
	s := natsembed.StartForTest(t)
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = time.Second },
		Health:  func(c *health.Config) { c.HeartbeatInterval = 100 * time.Millisecond }})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	for _, r := range []client.Request{
		{Capability: wire.CapGenerate, Body: []byte("hello"), Model: DemoChatModel},
		{Capability: wire.CapCode, Body: []byte(`{"prompt":"def f():","max_tokens":4}`), Model: DemoCodeModel},
		{Capability: wire.CapEmbed, Body: []byte("embed me"), Model: DemoEmbedModel},
	} {
		var res *client.Response
		natsembed.Eventually(t, 10*time.Second, func() error {
			var err error
			res, err = c.Infer(ctx, r)
			return err
		})
		assert.NotEmpty(t, res.Body, r.Capability)
	}
}
