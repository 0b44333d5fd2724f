package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const testHeartbeat = 100 * time.Millisecond

// startDemoMesh runs the three demo nodes on an embedded server with fast
// heartbeats, as the e2e harness does.
func startDemoMesh(t *testing.T) *server.Server {
	t.Helper()
	s := natsembed.StartForTest(t)
	nodes := devmesh.DemoNodes()
	for i := range nodes {
		nodes[i].HeartbeatInterval = testHeartbeat
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mesh, err := devmesh.Start(ctx, devmesh.Options{
		Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * testHeartbeat },
		Health:  func(c *health.Config) { c.HeartbeatInterval = testHeartbeat },
	})
	require.NoError(t, err)
	t.Cleanup(mesh.Stop)
	return s
}

// runTop runs `fedmesh top args...` against s and returns what it printed.
func runTop(t *testing.T, s *server.Server, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := NewRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(append([]string{"top"}, args...), "--nats-url", s.ClientURL()))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func lineWith(frame string, parts ...string) (string, bool) {
next:
	for _, l := range strings.Split(frame, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return l, true
	}
	return "", false
}

// Every view of `top --once` on the real demo mesh, at 80 columns.
func TestTopOnceEveryViewOnARealMesh(t *testing.T) {
	s := startDemoMesh(t)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	infer := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hello"), Tenant: "acme"})
		return err
	}
	natsembed.Eventually(t, 10*time.Second, func() error { return infer() })
	require.NoError(t, infer())

	// An operator's typo: routers refuse it and keep their base policy.
	set := natsembed.BucketsForTest(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = set.Config.Put(ctx, record.ConfigKeyPolicy, []byte(`{"stratgy":"round_robin"}`))
	require.NoError(t, err)

	// fed.stats has counted both requests (health writes them as they come).
	natsembed.Eventually(t, 10*time.Second, func() error {
		out, err := runTop(t, s, "--once", "--view", "stats", "--timeout", "2s")
		if err != nil {
			return err
		}
		if _, ok := lineWith(out, "acme", "2"); !ok {
			return fmt.Errorf("stats not in yet:\n%s", out)
		}
		return nil
	})

	ids := []string{}
	for _, n := range devmesh.DemoNodes() {
		ids = append(ids, n.NodeID)
	}
	tests := []struct {
		view  string
		heads []string
		rows  [][]string
		text  []string
	}{
		{"catalog", []string{"NODE", "REGION", "CLEARANCE", "COST", "MODELS"},
			[][]string{{"us-west-gpu-1", "us-west", "internal", "0.60"}, {"eu-west-gpu-1", "confidential", "0.80"},
				{"ap-south-cpu-1", "ap-south", "0.20"}, {"qwen-coder-7b", "code,generate"}}, nil},
		{"health", []string{"NODE", "STATE", "P50 MS", "P99 MS", "IN FLIGHT", "per model"},
			[][]string{{"us-west-gpu-1", "/16"}, {"eu-west-gpu-1", "/16"}, {"ap-south-cpu-1", "/16"}}, nil},
		{"routing", nil, nil, []string{"fed.router.decisions joined with fed.outcome.*"}},
		{"circuits", []string{"NODE", "CIRCUIT", "FAILS", "HALF-OPEN IN", "PROBE"},
			[][]string{{"us-west-gpu-1", "closed"}, {"eu-west-gpu-1", "closed"}, {"ap-south-cpu-1", "closed"}}, nil},
		{"stats", []string{"NODE", "TENANT", "REQS", "FAILS", "REQ/S", "P99 MS"}, [][]string{{"acme", "2", "0"}},
			[]string{"requests 2", "ok 2"}},
		{"policies", []string{"FIELD", "IN FORCE", "DEFAULT"}, [][]string{{"strategy", record.DefaultPolicy().Strategy}},
			[]string{"REJECTED: routers keep their base policy", `unknown field "stratgy"`, `rejected value {"stratgy":"round_robin"}`}},
		{"help", []string{"KEY", "ACTION"}, [][]string{{"tab / shift+tab"}, {"q / ctrl+c", "quit"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.view, func(t *testing.T) {
			args := []string{"--once", "--view", tt.view, "--width", "80"}
			if tt.view == "routing" {
				args = append(args, "--interval", "100ms")
			}
			out, err := runTop(t, s, args...)
			require.NoError(t, err)
			assert.Regexp(t, `connected  mesh (ready|degraded|initializing)`, out)
			assert.NotContains(t, out, "\x1b[", "plain text")
			assert.NotContains(t, out, "…", "no cell cut short")
			for _, l := range strings.Split(out, "\n") {
				assert.LessOrEqual(t, ansi.StringWidth(l), 80, "%q", l)
			}
			for _, h := range tt.heads {
				assert.Contains(t, out, h)
			}
			if tt.view != "routing" && tt.view != "help" && tt.view != "policies" {
				for _, id := range ids {
					assert.Contains(t, out, id)
				}
			}
			for _, cells := range tt.rows {
				_, ok := lineWith(out, cells...)
				assert.True(t, ok, "no line with %q in\n%s", cells, out)
			}
			flat := strings.Join(strings.Fields(out), " ")
			for _, s := range tt.text {
				assert.Contains(t, flat, s)
			}
		})
	}
}

// The routing view joins the router's own decision (fed.router.decisions)
// with the outcome the real node publishes when it has served the request.
func TestTopOnceRoutingJoinsDecisionsAndOutcomes(t *testing.T) {
	s := startDemoMesh(t)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	natsembed.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("warm up")})
		return err
	})

	var (
		out  string
		err2 error
		wg   sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		out, err2 = runTop(t, s, "--once", "--view", "routing", "--interval", "2500ms")
	}()
	// Serve requests until top has printed: the ones the router places
	// while top listens make rows.
	var served []client.Response
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Model: devmesh.DemoChatModel,
				Body: []byte("hi"), RequestID: fmt.Sprintf("top-test-%d", i), Tenant: "acme"})
			cancel()
			require.NoError(t, err)
			served = append(served, *resp)
			continue
		}
		break
	}
	wg.Wait()
	require.NoError(t, err2)
	joined := 0
	for _, r := range served {
		// REQUEST, CAP, MODEL, TENANT, NODE, then the outcome
		if _, ok := lineWith(out, r.RequestID+" ", " generate ", " "+devmesh.DemoChatModel+" ", " acme ", " "+r.Node+" ", " ok "); ok {
			joined++
		}
	}
	assert.Positive(t, joined, "a decision row with its capability, model, tenant, node and outcome in\n%s", out)
	strategy := record.DefaultPolicy().Strategy
	_, ok := lineWith(out, "top-test-", " "+strategy+" ")
	assert.True(t, ok, "the router's strategy %s on its rows in\n%s", strategy, out)
}

func TestTopOnceWithoutMeshFails(t *testing.T) {
	s := natsembed.StartForTest(t) // a server, but no mesh: no buckets, nothing answers
	out, err := runTop(t, s, "--once", "--timeout", "1s")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mesh not readable")
	assert.Contains(t, err.Error(), "bucket not found")
	assert.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	assert.Empty(t, out)
}

// A mesh whose buckets exist but whose health service is not running:
// the views still print, with fed.stats' failure said and "-" for its data.
func TestTopOnceWithoutHealthService(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	set := natsembed.BucketsForTest(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := devmesh.DemoNodes()[0]
	rec := record.Node{NodeID: n.NodeID, Region: n.Region, MaxConcurrency: 4, Cost: 0.5,
		Models: []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}}
	value, err := json.Marshal(rec)
	require.NoError(t, err)
	_, err = set.Catalog.Put(ctx, buckets.NodeKey(rec.NodeID), value)
	require.NoError(t, err)

	out, err := runTop(t, s, "--once", "--view", "stats", "--timeout", "3s")
	require.NoError(t, err)
	assert.Contains(t, out, "connected  mesh -")
	assert.Contains(t, out, "no responders")
	out, err = runTop(t, s, "--once", "--view", "health", "--timeout", "3s")
	require.NoError(t, err)
	row, ok := lineWith(out, n.NodeID)
	require.True(t, ok, out)
	assert.Contains(t, row, "unknown")
	assert.NotContains(t, row, "0.0")
}

func TestTopRejectsBadFlags(t *testing.T) {
	s := natsembed.StartForTest(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--view", "bogus"}, "unknown view"},
		{[]string{"--sort", "bogus"}, "unknown sort column"},
		{[]string{"--interval", "0s"}, "--interval must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := runTop(t, s, append([]string{"--once"}, tt.args...)...)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}
