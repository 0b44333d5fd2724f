package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
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
	return startSecuredWith(t, creds, func(o *devmesh.Options) {
		o.Catalog = func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval }
		o.Health = func(c *health.Config) { c.HeartbeatInterval = hbInterval }
	}, nodes...)
}

// startSecuredWith is startSecured with the mesh options adjusted.
func startSecuredWith(t *testing.T, creds func(base func(string, string, *nodeagent.Config) ([]nats.Option, error), d *auth.Dir) func(string, string, *nodeagent.Config) ([]nats.Option, error), adjust func(*devmesh.Options), nodes ...nodeagent.Config) *securedMesh {
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
	opts := devmesh.Options{Server: m.s, Log: natsembed.Logger(t), Nodes: nodes, Credentials: cr, AsyncError: m.v.hear}
	if adjust != nil {
		adjust(&opts)
	}
	m.mesh = startMesh(t, opts)
	return m
}

// operator connects as the operator (what the CLI's stats, candidates and
// KV reads need), its violations heard as "operator".
func (m *securedMesh) operator(t *testing.T) *nats.Conn {
	t.Helper()
	o, err := m.d.ConnOption(auth.User{Role: auth.RoleOperator})
	require.NoError(t, err)
	nc, err := nats.Connect(m.s.ClientURL(), o, nats.CustomInboxPrefix("_INBOX.operator"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { m.v.hear("operator", err) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// starter starts a test's mesh with nodes: start (open) or startSecuredEnv.
type starter func(t *testing.T, nodes ...nodeagent.Config) *env

// bothModes runs a scenario on an open mesh and on a secured one (DESIGN
// §16: operator mode, every part on its own credential, the client a
// tenant's), where it must also cause no permission violation.
func bothModes(t *testing.T, scenario func(t *testing.T, start starter)) {
	t.Run("open", func(t *testing.T) { scenario(t, start) })
	t.Run("secured", func(t *testing.T) { scenario(t, startSecuredEnv) })
}

// startSecuredEnv is start in operator mode: the mesh with the scenarios'
// intervals, requests from a client of tenant acme on its own credential,
// stats, candidates and KV reads as the operator. When the test ends (before
// the mesh stops) it fails on any permission violation any connection heard.
func startSecuredEnv(t *testing.T, nodes ...nodeagent.Config) *env {
	t.Helper()
	m := startSecuredWith(t, nil, func(o *devmesh.Options) {
		o.Catalog = func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval }
		o.Health = func(c *health.Config) {
			c.HeartbeatInterval = hbInterval
			c.ResetTimeout = resetTimeout
			c.CheckInterval = time.Second
			c.ProbeTimeout = 200 * time.Millisecond
		}
	}, nodes...)
	t.Cleanup(func() {
		n, by := m.v.snapshot()
		assert.Zero(t, n, "permission violations: %v", by)
	})
	op := m.operator(t)
	c, err := client.New(m.client(t, "acme"), client.WithTenant("acme"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	e := &env{t: t, mesh: m.mesh, nc: op, c: c, kv: natsembed.BucketsForTest(t, op)}
	for _, n := range nodes {
		e.waitRoutable(n.NodeID, n.Models[0].Capabilities[0])
	}
	return e
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
