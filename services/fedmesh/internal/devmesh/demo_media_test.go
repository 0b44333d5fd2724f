package devmesh

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
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
	c, nodes := startSimDemo(t, ctx, func(n []nodeagent.Config) []nodeagent.Config { return n[len(n)-1:] })
	media := nodes[len(nodes)-1]
	require.Equal(t, DemoMediaNode, media.NodeID)
	assert.Equal(t, "synthetic", media.Backend.Name())
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
