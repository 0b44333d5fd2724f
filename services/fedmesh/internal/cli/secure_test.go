package cli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// startSecuredDemoMesh is startDemoMesh in operator mode, as `fedmesh dev
// --secure DIR` runs it: it returns the server and DIR, which holds
// dev-client.creds (tenant dev) and operator.creds.
func startSecuredDemoMesh(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "auth")
	_, err := auth.Init(dir, "")
	require.NoError(t, err)
	d, err := auth.Open(dir)
	require.NoError(t, err)
	s := natsembed.StartOperatorForTest(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, devmesh.SetupSecured(ctx, s, d, dir, devTenant, buckets.Options{}))
	nodes := devmesh.DemoNodes()
	for i := range nodes {
		nodes[i].HeartbeatInterval = testHeartbeat
	}
	mesh, err := devmesh.Start(ctx, devmesh.Options{
		Server: s, Log: natsembed.Logger(t), Nodes: nodes, Credentials: devmesh.Credentials(d),
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * testHeartbeat },
		Health:  func(c *health.Config) { c.HeartbeatInterval = testHeartbeat },
	})
	require.NoError(t, err)
	t.Cleanup(mesh.Stop)
	return s, dir
}

// The CLI takes --creds (or FEDMESH_CREDS), --nkey and the TLS flags like
// the service commands; a client credential picks its own inbox prefix and
// tenant subject, so `fedmesh --creds DIR/dev-client.creds infer` works in
// a secured mesh, and what the role may not do fails.
func TestCLISecured(t *testing.T) {
	s, dir := startSecuredDemoMesh(t)
	url := s.ClientURL()
	clientCreds, opCreds := filepath.Join(dir, "dev-client.creds"), filepath.Join(dir, "operator.creds")

	var out, stderr string
	var code int
	natsembed.Eventually(t, 20*time.Second, func() error { // until a node is routable
		out, stderr, code = runCLI(t, url, "", "--creds", clientCreds, "infer", "hello")
		return natsembed.Check(code == 0, "infer as the dev client: exit %d: %s", code, stderr)
	})
	assert.NotEmpty(t, strings.TrimSpace(out))

	// the operator reads the mesh's state, which a client may not
	out, stderr, code = runCLI(t, url, "", "--creds", opCreds, "stats")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, `"total_requests"`)

	t.Run("env", func(t *testing.T) {
		t.Setenv("FEDMESH_CREDS", clientCreds)
		out, stderr, code := runCLI(t, url, "", "infer", "hello")
		require.Equal(t, 0, code, stderr)
		assert.NotEmpty(t, strings.TrimSpace(out))
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no credential", []string{"stats"}, "authorization violation"},
		{"creds and nkey", []string{"--creds", clientCreds, "--nkey", clientCreds, "stats"}, "give one"},
		{"half a client certificate", []string{"--creds", clientCreds, "--tls-cert", clientCreds, "infer", "x"}, "go together"},
		{"another tenant", []string{"--creds", clientCreds, "infer", "--tenant", "acme", "hello"}, "tenant dev's"},
		{"a client asks for stats", []string{"--creds", clientCreds, "--timeout", "1s", "stats"}, "stats"},
		{"another inbox", []string{"--creds", clientCreds, "--inbox-prefix", "_INBOX.acme", "--timeout", "1s", "infer", "hello"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, url, "", tc.args...)
			assert.NotEqual(t, 0, code, "a denied command succeeded")
			assert.Contains(t, strings.ToLower(stderr), tc.want)
		})
	}
}
