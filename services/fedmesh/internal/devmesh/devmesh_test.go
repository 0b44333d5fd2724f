package devmesh

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// Every part runs on a connection named as its command would name it, and
// Stop closes them all.
func TestPartsAreNamedLikeTheirCommands(t *testing.T) {
	s := natsembed.StartForTest(t)
	gw := gateway.DefaultConfig()
	gw.Addr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Routers: 2, Nodes: DemoNodes()[:1], Gateway: &gw})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	require.NotNil(t, m.Gateway)
	assert.NotEmpty(t, m.Gateway.Addr())

	assert.ElementsMatch(t, []string{"fedmesh-catalog-1", "fedmesh-health-1", "fedmesh-router-1", "fedmesh-router-2",
		"fedmesh-nodeagent-us-west-gpu-1", "fedmesh-gateway-1"}, connNames(t, s))
	m.Stop()
	natsembed.Eventually(t, 0, func() error {
		names := connNames(t, s)
		return natsembed.Check(len(names) == 0, "still connected after Stop: %v", names)
	})
}

func connNames(t *testing.T, s *server.Server) []string {
	t.Helper()
	cz, err := s.Connz(&server.ConnzOptions{})
	require.NoError(t, err)
	var names []string
	for _, c := range cz.Conns {
		names = append(names, c.Name)
	}
	return names
}
