// Package e2e runs the real services on a real embedded nats-server and
// talks to them only over the wire, as a client would.
package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// env is one test's mesh and a client connected over TCP.
type env struct {
	t    *testing.T
	mesh *devmesh.Mesh
	nc   *nats.Conn
	c    *client.Client
	kv   *buckets.Set
}

// Fast intervals so scenarios take milliseconds instead of the production
// seconds; the state machines are the same.
const (
	hbInterval   = 100 * time.Millisecond
	resetTimeout = 600 * time.Millisecond
)

func start(t *testing.T, nodes ...nodeagent.Config) *env {
	t.Helper()
	return startWith(t, nil, nodes...)
}

// startWith is start with a hook that adjusts the mesh options.
func startWith(t *testing.T, adjust func(*devmesh.Options), nodes ...nodeagent.Config) *env {
	t.Helper()
	s := natsembed.StartForTest(t)
	for i := range nodes {
		nodes[i].HeartbeatInterval = hbInterval
	}
	opts := devmesh.Options{
		Server: s, Log: natsembed.Logger(t), Nodes: nodes,
		Catalog: func(c *catalog.Config) { c.NodeTTL = 10 * hbInterval },
		Health: func(c *health.Config) {
			c.HeartbeatInterval = hbInterval
			c.ResetTimeout = resetTimeout
			c.CheckInterval = time.Second
			c.ProbeTimeout = 200 * time.Millisecond
		},
	}
	if adjust != nil {
		adjust(&opts)
	}
	mesh := startMesh(t, opts)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	e := &env{t: t, mesh: mesh, nc: nc, c: c, kv: natsembed.BucketsForTest(t, nc)}
	for _, n := range nodes {
		e.waitRoutable(n.NodeID, n.Models[0].Capabilities[0])
	}
	return e
}

// startMesh starts a mesh (20 s to come up) and stops it when the test ends.
func startMesh(t *testing.T, opts devmesh.Options) *devmesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mesh, err := devmesh.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(mesh.Stop)
	return mesh
}

// node builds a synthetic node agent config.
func node(id, region string, clearance wire.Privacy, sc synthetic.Config, models ...record.Model) nodeagent.Config {
	c := nodeagent.DefaultConfig()
	c.NodeID, c.Region = id, region
	c.GPU, c.Cost, c.Clearance, c.MaxConcurrency = true, 0.5, clearance, 32
	if len(models) == 0 {
		models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}
	}
	c.Models = models
	if sc.Tokens == 0 {
		sc.Tokens = 4
	}
	c.Backend = synthetic.New(sc)
	return c
}

// waitCircuit waits until the node's circuit is in state.
func (e *env) waitCircuit(nodeID, state string, within time.Duration) {
	e.t.Helper()
	natsembed.Eventually(e.t, within, func() error {
		h := e.health(nodeID)
		return natsembed.Check(h.Circuit == state, "circuit of %s is %s, want %s", nodeID, h.Circuit, state)
	})
}

// waitRoutable waits until the router's candidates list the node as eligible.
func (e *env) waitRoutable(nodeID, capability string) { e.waitEligible(nodeID, capability, true) }

// waitEligible waits until the router's own view (its candidates) has the
// node eligible or not: health's record can say it before the router's
// KV watch has delivered it.
func (e *env) waitEligible(nodeID, capability string, want bool) {
	e.t.Helper()
	natsembed.Eventually(e.t, 10*time.Second, func() error {
		for _, c := range e.candidates(nats.Header{wire.HdrCapability: {capability}}).Candidates {
			if c.NodeID == nodeID {
				return natsembed.Check(c.Eligible == want, "router: node %s eligible %v (%s), want %v", nodeID, c.Eligible, c.Reason, want)
			}
		}
		return natsembed.Check(!want, "router: node %s not among the candidates", nodeID)
	})
}

func (e *env) candidates(h nats.Header) api.CandidatesResponse {
	e.t.Helper()
	msg := nats.NewMsg(subject.Default.RouterCandidates())
	msg.Header = h
	resp, err := e.nc.RequestMsg(msg, 2*time.Second)
	require.NoError(e.t, err)
	require.Nil(e.t, wire.ErrorFromHeader(resp.Header), "candidates error")
	var out api.CandidatesResponse
	require.NoError(e.t, json.Unmarshal(resp.Data, &out))
	return out
}

func (e *env) infer(r client.Request) (*client.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.Capability == "" {
		r.Capability = wire.CapGenerate
	}
	return e.c.Infer(ctx, r)
}

// servedBy sends r and returns the node that answered it; an error fails
// the test.
func (e *env) servedBy(r client.Request) string {
	e.t.Helper()
	resp, err := e.infer(r)
	require.NoError(e.t, err)
	return resp.Node
}

func (e *env) stats() record.Stats {
	e.t.Helper()
	resp, err := e.nc.Request(subject.Default.Stats(), nil, 2*time.Second)
	require.NoError(e.t, err)
	var s record.Stats
	require.NoError(e.t, json.Unmarshal(resp.Data, &s))
	return s
}

func (e *env) health(nodeID string) record.Health {
	e.t.Helper()
	ent, err := e.kv.Health.Get(context.Background(), buckets.NodeKey(nodeID))
	require.NoError(e.t, err)
	h, err := record.DecodeHealth(ent.Key(), ent.Value())
	require.NoError(e.t, err)
	return h
}

func codeOf(err error) int {
	if err == nil {
		return 0
	}
	return wire.CodeOf(err)
}
