package natsembed

// The one test kit of fedmesh: every integration test starts a real server,
// logs through t.Log, opens the buckets, runs services and waits for
// conditions the same way.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// Test timing: how long Eventually waits by default and how often it looks.
const (
	WaitFor = 5 * time.Second
	Tick    = 10 * time.Millisecond
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

// BucketsForTest creates fedmesh's buckets on nc's server and opens them.
func BucketsForTest(t testing.TB, nc *nats.Conn) *buckets.Set {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	set, err := buckets.EnsureConn(ctx, nc, buckets.Options{})
	if err != nil {
		t.Fatalf("buckets: %v", err)
	}
	return set
}

// RunForTest starts svc (10 s to come up) and stops it when the test ends.
// A failed Start fails the test.
func RunForTest(t testing.TB, svc servicecmd.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatalf("start %T: %v", svc, err)
	}
	t.Cleanup(func() {
		if err := svc.Stop(); err != nil {
			t.Errorf("stop %T: %v", svc, err)
		}
	})
}

// Logger returns a logger that writes through t.Log, so a service's lines
// appear with the test that caused them (on failure, or with -v). Lines
// written after the test ended are dropped instead of panicking.
func Logger(t testing.TB) zerolog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return logging.New(w, logging.FormatConsole, "debug")
}

// LogBuffer is a log sink a test can read while services write to it; it
// also writes through t.Log.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
	tw *testWriter
}

// NewLogBuffer returns a LogBuffer and a logger (JSON, level debug) writing to it.
func NewLogBuffer(t testing.TB) (*LogBuffer, zerolog.Logger) {
	lb := &LogBuffer{tw: &testWriter{t: t}}
	t.Cleanup(lb.tw.close)
	return lb, logging.New(lb, logging.FormatJSON, "debug")
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	return l.tw.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Eventually polls check every Tick until it returns nil, for up to within
// (WaitFor when 0); then it fails the test with check's last error.
func Eventually(t testing.TB, within time.Duration, check func() error) {
	t.Helper()
	if err := poll(within, check); err != nil {
		t.Fatalf("condition not met after %s: %v", or(within, WaitFor), err)
	}
}

// Never checks that check keeps returning nil for the whole of d.
func Never(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := check(); err != nil {
			t.Fatalf("condition broken: %v", err)
		}
		time.Sleep(Tick)
	}
}

func poll(within time.Duration, check func() error) error {
	end := time.Now().Add(or(within, WaitFor))
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(end) {
			return err
		}
		time.Sleep(Tick)
	}
}

func or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Check is a shorthand for check functions: nil when ok, else an error
// built from format and args.
func Check(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	if format == "" {
		return errors.New("not yet")
	}
	return fmt.Errorf(format, args...)
}
