package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// securedMesh is a mesh in operator mode (DESIGN §16): a fresh auth dir,
// buckets made by the operator, every part on its own credential, and the
// permission violations every connection hears.
type securedMesh struct {
	dir  string
	d    *auth.Dir
	s    *server.Server
	mesh *devmesh.Mesh
	v    *violations
}

// startSecured starts nodes in operator mode; creds, when set, wraps the
// default credentials (a test's rogue node).
func startSecured(t *testing.T, creds func(base func(string, string, *nodeagent.Config) ([]nats.Option, error), d *auth.Dir) func(string, string, *nodeagent.Config) ([]nats.Option, error), nodes ...nodeagent.Config) *securedMesh {
	t.Helper()
	m := &securedMesh{dir: t.TempDir(), v: &violations{}}
	_, err := auth.Init(m.dir, "")
	require.NoError(t, err)
	m.d, err = auth.Open(m.dir)
	require.NoError(t, err)
	m.s = natsembed.StartOperatorForTest(t, m.dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, devmesh.SetupSecured(ctx, m.s, m.d, m.dir, "acme", buckets.Options{}))
	cr := devmesh.Credentials(m.d)
	if creds != nil {
		cr = creds(cr, m.d)
	}
	for i := range nodes {
		nodes[i].HeartbeatInterval = hbInterval
	}
	m.mesh = startMesh(t, devmesh.Options{Server: m.s, Log: natsembed.Logger(t), Nodes: nodes,
		Credentials: cr, AsyncError: m.v.hear,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval },
		Health:  func(c *health.Config) { c.HeartbeatInterval = hbInterval }})
	return m
}

// client connects as a client of tenant, on its inbox prefix, its
// violations heard as "client-<tenant>".
func (m *securedMesh) client(t *testing.T, tenant string) *nats.Conn {
	t.Helper()
	o, err := m.d.ConnOption(auth.User{Role: auth.RoleClient, Tenant: tenant})
	require.NoError(t, err)
	nc, err := nats.Connect(m.s.ClientURL(), o, nats.CustomInboxPrefix("_INBOX."+tenant),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { m.v.hear("client-"+tenant, err) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}
