package natsembed

import (
	"path/filepath"
	"testing"
	"time"

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
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server config %s: %v", conf, err)
	}
	opts.ServerName = "fedmesh-test"
	opts.Host = "127.0.0.1"
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("operator-mode nats-server from %s: %v", conf, err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("operator-mode nats-server from %s not ready after 10s", conf)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
