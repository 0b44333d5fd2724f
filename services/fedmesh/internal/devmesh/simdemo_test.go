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
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// startSimDemo runs the simulated demo's nodes that keep picks (all when
// nil) on a fresh mesh, heartbeats every 100 ms, and returns a client and
// every demo node's config.
func startSimDemo(t *testing.T, ctx context.Context, keep func([]nodeagent.Config) []nodeagent.Config) (*client.Client, []nodeagent.Config) {
	t.Helper()
	nodes, servers, err := SimDemoNodes(ctx, 1, natsembed.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, StopSimServers(servers)) })
	require.Len(t, servers, 3, "one simulated server per text node")
	for i := range nodes {
		nodes[i].HeartbeatInterval = 100 * time.Millisecond
	}
	run := nodes
	if keep != nil {
		run = keep(nodes)
	}
	s := natsembed.StartForTest(t)
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Nodes: run,
		Catalog: func(c *catalog.Config) { c.NodeTTL = time.Second },
		Health:  func(c *health.Config) { c.HeartbeatInterval = 100 * time.Millisecond }})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, nodes
}

// The demo mesh on simulated servers answers chat (on any node), code and
// embed requests.
func TestSimDemoNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _ := startSimDemo(t, ctx, nil)
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

// Issue 14's demo target: with the default policy, chat requests sent right
// after the mesh starts go to the fastest eligible node (the h100). Each
// node's warm-up has measured its server's first token by the time the mesh
// is up, so no request goes to a slower node to find out.
func TestSimDemoPlacesOnFastest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := startSimDemo(t, ctx, nil)
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
	for i, node := range got {
		assert.Equal(t, fastest, node, "request %d; placements %v", i, got)
	}
}
