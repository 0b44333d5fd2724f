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

// The simulated demo serves the binary capabilities too: its media node
// stays synthetic (a simulated vLLM serves text only) and answers
// transcribe (a 3 MB upload, out of band), synthesize and imagegen.
func TestSimDemoMediaNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes, servers, err := SimDemoNodes(ctx, 1, natsembed.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, StopSimServers(servers)) })
	require.Len(t, servers, 3, "one simulated server per text node")
	media := nodes[len(nodes)-1]
	require.Equal(t, DemoMediaNode, media.NodeID)
	assert.Equal(t, "synthetic", media.Backend.Name())
	for i := range nodes {
		nodes[i].HeartbeatInterval = 100 * time.Millisecond
	}
	s := natsembed.StartForTest(t)
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes[len(nodes)-1:],
		Catalog: func(c *catalog.Config) { c.NodeTTL = time.Second },
		Health:  func(c *health.Config) { c.HeartbeatInterval = 100 * time.Millisecond }})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	for _, r := range []client.Request{
		{Capability: wire.CapTranscribe, Body: make([]byte, 3<<20), Model: DemoTranscribeModel},
		{Capability: wire.CapSynthesize, Body: []byte(`{"input":"hi"}`), Model: DemoSpeechModel},
		{Capability: wire.CapImagegen, Body: []byte("a lighthouse"), Model: DemoImageModel},
	} {
		var res *client.Response
		natsembed.Eventually(t, 10*time.Second, func() error {
			var err error
			res, err = c.Infer(ctx, r)
			return err
		})
		assert.NotEmpty(t, res.Body, r.Capability)
		assert.Equal(t, DemoMediaNode, res.Node)
	}
}
