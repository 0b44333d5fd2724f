package natsembed

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// StartOperatorForTest runs a server in operator mode (decentralized JWT
// auth) from an auth dir made by `fedmesh auth init`: the config is
// dir/server.conf as nats-server parses it (operator, system account,
// MEMORY resolver with the account JWTs), on a random loopback port, with
// JetStream in t.TempDir(). It shuts down when the test ends. Clients
// connect with nats.UserCredentials(<a .creds file>).
func StartOperatorForTest(t testing.TB, dir string) *server.Server {
	t.Helper()
	conf := filepath.Join(dir, "server.conf")
	s, err := Start(Options{Name: "fedmesh-test", Port: -1, StoreDir: t.TempDir(), ConfigFile: conf})
	if err != nil {
		t.Fatalf("operator-mode nats-server: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
