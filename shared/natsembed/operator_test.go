package natsembed

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// testdata/operator/server.conf is what `fedmesh auth init` wrote (public
// JWTs only: no seed is committed).
const operatorDir = "testdata/operator"

func TestStartOperatorForTest(t *testing.T) {
	s := StartOperatorForTest(t, operatorDir)
	if !s.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("not on loopback: %s", s.ClientURL())
	}
	if s.SystemAccount() == nil {
		t.Fatal("no system account")
	}

	// The preloaded accounts are known; FEDMESH has JetStream.
	conf, err := os.ReadFile(filepath.Join(operatorDir, "server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	keys := regexp.MustCompile(`(?m)^\s+(A[A-Z2-7]{55}):`).FindAllStringSubmatch(string(conf), -1)
	if len(keys) != 2 {
		t.Fatalf("want 2 preloaded accounts in server.conf, found %d", len(keys))
	}
	js := 0
	for _, k := range keys {
		acc, err := s.LookupAccount(k[1])
		if err != nil {
			t.Fatalf("account %s: %v", k[1], err)
		}
		if acc.JetStreamEnabled() {
			js++
		}
	}
	if js != 1 {
		t.Fatalf("%d accounts with JetStream, want 1 (FEDMESH)", js)
	}

	// Operator mode: no credentials, no connection.
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("want an authorization error, got %v", err)
	}
}
