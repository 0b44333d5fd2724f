package health

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// testConfig shrinks every interval; probes are off (CheckInterval of an
// hour) and silence never makes a node unhealthy (MissedHeartbeats) unless
// a test turns them on, so a loaded machine cannot fail unrelated tests.
func testConfig() Config {
	c := DefaultConfig()
	c.HeartbeatInterval = 50 * time.Millisecond
	c.MissedHeartbeats = 1000
	c.ResetTimeout = 300 * time.Millisecond
	c.CheckInterval = time.Hour
	c.ProbeTimeout = 200 * time.Millisecond
	c.ForgetAfter = time.Hour
	return c
}

type harness struct {
	t   *testing.T
	srv *server.Server
	nc  *nats.Conn // the "nodes and routers" connection
	kv  jetstream.KeyValue
	cat jetstream.KeyValue
	sp  subject.Space
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	set := natsembed.BucketsForTest(t, nc)
	return &harness{t: t, srv: srv, nc: nc, kv: set.Health, cat: set.Catalog}
}

// start runs one health instance on its own connection, logging through t.Log.
func (h *harness) start(cfg Config) *Service {
	h.t.Helper()
	return h.startLogging(cfg, natsembed.Logger(h.t))
}

// startLogging is start with the logger a test reads back.
func (h *harness) startLogging(cfg Config, log zerolog.Logger) *Service {
	h.t.Helper()
	s, err := New(natsembed.ConnectForTest(h.t, h.srv), cfg, log)
	require.NoError(h.t, err)
	natsembed.RunForTest(h.t, s)
	return s
}

func (h *harness) publish(subj string, v any) {
	h.t.Helper()
	require.NoError(h.t, wire.PublishJSON(h.nc, subj, v))
}

// outcomeSubject is where o's publisher sends it: node agents on
// fed.outcome.<node>, routers on fed.router.failed.<node>, clients on
// fed.client.duplicate.<node>.
func (h *harness) outcomeSubject(o record.Outcome) string {
	switch o.Kind {
	case record.OutcomeDispatchFailed:
		return h.sp.RouterFailed(o.NodeID)
	case record.OutcomeDuplicate:
		return h.sp.ClientDuplicate(o.NodeID)
	}
	return h.sp.Outcome(o.NodeID)
}

func (h *harness) heartbeat(id string) {
	h.publish(h.sp.Heartbeat(id), record.Heartbeat{NodeID: id, Time: time.Now(), MaxConcurrency: 4})
}

func (h *harness) ok(id string, latencyMs float64) {
	h.publish(h.sp.Outcome(id), record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, OK: true,
		LatencyMs: latencyMs, Time: time.Now()})
}

func (h *harness) fail(id string, code int) {
	h.publish(h.sp.Outcome(id), record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, Code: code,
		Error: "backend failed", Time: time.Now()})
}

// record reads a node's fed_health value; nil when absent.
func (h *harness) record(id string) *record.Health {
	e, err := h.kv.Get(context.Background(), buckets.NodeKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	require.NoError(h.t, err)
	r, err := record.DecodeHealth(e.Key(), e.Value())
	require.NoError(h.t, err)
	return &r
}

// waitKV polls fed_health until cond holds for node id.
func (h *harness) waitKV(id, what string, cond func(r *record.Health) bool) *record.Health {
	h.t.Helper()
	var last *record.Health
	natsembed.Eventually(h.t, 0, func() error {
		last = h.record(id)
		return natsembed.Check(last != nil && cond(last), "fed_health %s: %s; last value %+v", id, what, last)
	})
	return last
}

func stateIs(st string) func(*record.Health) bool {
	return func(r *record.Health) bool { return r.State == st }
}

func circuitIs(c string) func(*record.Health) bool {
	return func(r *record.Health) bool { return r.Circuit == c }
}

// request calls a micro endpoint and returns the body, or the wire error.
func (h *harness) request(subj string, body []byte) ([]byte, *wire.Error) {
	h.t.Helper()
	m, err := h.nc.Request(subj, body, 2*time.Second)
	require.NoError(h.t, err)
	if werr := wire.ErrorFromHeader(m.Header); werr != nil {
		return nil, werr
	}
	return m.Data, nil
}

func (h *harness) get(id string) (record.Health, *wire.Error) {
	h.t.Helper()
	body, _ := json.Marshal(api.HealthGetRequest{NodeID: id})
	data, werr := h.request(h.sp.HealthGet(), body)
	var r record.Health
	if werr == nil {
		var err error
		r, err = record.DecodeHealth(buckets.NodeKey(id), data)
		require.NoError(h.t, err)
	}
	return r, werr
}

func (h *harness) stats() record.Stats {
	h.t.Helper()
	data, werr := h.request(h.sp.Stats(), nil)
	require.Nil(h.t, werr)
	var st record.Stats
	require.NoError(h.t, json.Unmarshal(data, &st))
	return st
}

// register puts a catalog record as the catalog service would.
func (h *harness) register(id string) {
	h.t.Helper()
	data, err := json.Marshal(record.Node{NodeID: id, Region: "eu", Subject: h.sp.NodeInfer(id), MaxConcurrency: 8,
		Models: []record.Model{{ModelID: "m", Capabilities: []string{wire.CapGenerate}}}})
	require.NoError(h.t, err)
	_, err = h.cat.Put(context.Background(), buckets.NodeKey(id), data)
	require.NoError(h.t, err)
}

// inMemory reads a node as one instance holds it.
func inMemory(s *Service, id string) (record.Health, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		return record.Health{}, false
	}
	return n.record(), true
}
