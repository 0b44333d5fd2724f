package natsembed

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartForTest runs a server on a random loopback port with JetStream in
// t.TempDir() and shuts it down when the test ends.
func StartForTest(t testing.TB) *server.Server {
	t.Helper()
	s, err := Start(Options{Port: -1, StoreDir: t.TempDir(), Name: "fedmesh-test"})
	if err != nil {
		t.Fatalf("start embedded nats-server: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// ConnectForTest opens a client connection to s over TCP (as a real client
// would) and closes it when the test ends.
func ConnectForTest(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}
