package record

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/wire"
)

const goodNode = `{"node_id":"n1","region":"eu-west","subject":"fed.node.n1.infer","clearance":"confidential",
	"cost":0.4,"max_concurrency":4,"models":[{"model_id":"m1","capabilities":["generate"]}]}`

func TestDecodeNode(t *testing.T) {
	cases := []struct {
		name, key, data, wantErr string
	}{
		{"valid", "nodes.n1", goodNode, ""},
		{"key names another node", "nodes.n2", goodNode, `names node "n1"`},
		{"not a node key", "config", goodNode, "node_id"},
		{"bad json", "nodes.n1", `{`, "catalog record of node n1"},
		{"bad cost", "nodes.n1", strings.Replace(goodNode, `"cost":0.4`, `"cost":7`, 1), "cost"},
		{"no models", "nodes.n1", strings.Replace(goodNode, `"models":[{"model_id":"m1","capabilities":["generate"]}]`, `"models":[]`, 1), "models"},
		{"bad clearance", "nodes.n1", strings.Replace(goodNode, `"confidential"`, `"secret"`, 1), "secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := DecodeNode(c.key, []byte(c.data))
			if c.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, "n1", n.NodeID)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.wantErr)
		})
	}
}

func TestDecodeRejectsPoison(t *testing.T) {
	cases := []struct {
		name string
		run  func() error
	}{
		{"outcome latency 1e308", func() error {
			_, err := DecodeOutcome("fed.outcome.n1", []byte(`{"kind":"completed","latency_ms":1e308}`))
			return err
		}},
		{"outcome negative ttft", func() error {
			_, err := DecodeOutcome("fed.outcome.n1", []byte(`{"kind":"completed","ttft_ms":-1}`))
			return err
		}},
		{"outcome unknown kind", func() error {
			_, err := DecodeOutcome("fed.outcome.n1", []byte(`{"kind":"bogus"}`))
			return err
		}},
		{"outcome long tenant", func() error {
			_, err := DecodeOutcome("fed.outcome.n1", []byte(`{"kind":"completed","tenant":"`+strings.Repeat("t", 129)+`"}`))
			return err
		}},
		{"heartbeat gpu over 1", func() error {
			_, err := DecodeHeartbeat("fed.heartbeat.n1", []byte(`{"gpu_utilization":85}`))
			return err
		}},
		{"heartbeat for another node", func() error {
			_, err := DecodeHeartbeat("fed.heartbeat.n1", []byte(`{"node_id":"n2"}`))
			return err
		}},
		{"health p99 1e308", func() error {
			_, err := DecodeHealth("nodes.n1", []byte(`{"latency_p99_ms":1e308}`))
			return err
		}},
		{"outcome long instance_id", func() error {
			_, err := DecodeOutcome("fed.router.failed.n1", []byte(`{"kind":"dispatch_failed","instance_id":"`+strings.Repeat("i", MaxInstanceIDLen+1)+`"}`))
			return err
		}},
		{"health long instance_id", func() error {
			_, err := DecodeHealth("nodes.n1", []byte(`{"instance_id":"`+strings.Repeat("i", MaxInstanceIDLen+1)+`"}`))
			return err
		}},
		{"unplaced bad code", func() error {
			_, err := DecodeUnplaced([]byte(`{"code":7}`))
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { assert.Error(t, c.run()) })
	}
}

// The decoders take bytes from any NATS client or bucket writer: they must
// never panic, and whatever they accept must be safe to compute with.
func FuzzDecodeNode(f *testing.F) {
	f.Add("nodes.n1", []byte(goodNode))
	f.Add("nodes.n1", []byte(`{"node_id":"n1","cost":1e999}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		n, err := DecodeNode(key, data)
		if err != nil {
			return
		}
		if n.Validate() != nil || "nodes."+n.NodeID != key || len(n.Models) == 0 {
			t.Fatalf("accepted bad node %+v under %q", n, key)
		}
	})
}

func FuzzDecodeHealth(f *testing.F) {
	f.Add([]byte(`{"node_id":"n1","state":"healthy","latency_p50_ms":12.5,"latency_p99_ms":80,"success_rate":1}`))
	f.Add([]byte(`{"latency_p50_ms":-0,"gpu_utilization":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHealth("nodes.n1", data)
		if err != nil {
			return
		}
		for _, v := range []float64{h.LatencyP50Ms, h.LatencyP99Ms, h.ThroughputTPS, h.GPUUtilization, h.SuccessRate} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > math.MaxFloat32 {
				t.Fatalf("accepted bad health %+v", h)
			}
		}
		if h.NodeID != "n1" || len(h.InstanceID) > MaxInstanceIDLen {
			t.Fatalf("accepted health of %q (instance %.32q) under nodes.n1", h.NodeID, h.InstanceID)
		}
	})
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add([]byte(`{"node_id":"n1","in_flight":1,"queue_depth":0,"max_concurrency":4,"gpu_utilization":0.5,"throughput_tps":100}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		hb, err := DecodeHeartbeat("fed.heartbeat.n1", data)
		if err != nil {
			return
		}
		if hb.NodeID != "n1" || hb.InFlight < 0 || hb.QueueDepth < 0 || hb.ActiveStreams < 0 ||
			!(hb.GPUUtilization >= 0 && hb.GPUUtilization <= 1) || !(hb.ThroughputTPS >= 0 && hb.ThroughputTPS <= math.MaxFloat32) {
			t.Fatalf("accepted bad heartbeat %+v", hb)
		}
	})
}

func FuzzDecodeOutcome(f *testing.F) {
	f.Add([]byte(`{"kind":"completed","node_id":"n1","ok":true,"latency_ms":12,"tokens":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsJSON(t, data)
		o, err := DecodeOutcome("fed.outcome.n1", data)
		if err != nil {
			return
		}
		if o.NodeID != "n1" || !(o.LatencyMs >= 0 && o.LatencyMs <= MaxLatencyMs) || !(o.TTFTMs >= 0 && o.TTFTMs <= MaxLatencyMs) ||
			o.Tokens < 0 || !validCode(o.Code) || len(o.Tenant) > MaxTenantLen || len(o.InstanceID) > MaxInstanceIDLen {
			t.Fatalf("accepted bad outcome %+v", o)
		}
		// what health computes with it must stay finite
		if _, err := json.Marshal(o); err != nil {
			t.Fatalf("accepted outcome does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeUnplaced(f *testing.F) {
	f.Add([]byte(`{"code":503,"error":"no capacity","attempts":4}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := DecodeUnplaced(data)
		if err != nil {
			return
		}
		if u.Attempts < 0 || !validCode(u.Code) || len(u.Tenant) > MaxTenantLen {
			t.Fatalf("accepted bad unplaced %+v", u)
		}
	})
}

func FuzzDecodeDecisions(f *testing.F) {
	f.Add([]byte(`{"router":"r1","decisions":[{"request_id":"a","node":"n1","score":0.8,"decided_by":"latency","attempts":1,"ts":"2026-12-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"router":"r1","decisions":[{"node":"bad node","score":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDecisions(data)
		if err != nil {
			return
		}
		for _, x := range d.Decisions {
			if x.Attempts < 0 || x.QueuedMs < 0 || len(x.Tenant) > MaxTenantLen || wire.ValidateID("node", x.Node) != nil {
				t.Fatalf("accepted bad decision %+v", x)
			}
		}
	})
}

func TestDecodeStatsEvent(t *testing.T) {
	cases := []struct {
		name, data, want string // want "" = accepted
	}{
		{"good", `{"health":"h1","ts":"2026-12-01T00:00:00Z","stats":{"state":"ready","total_requests":3,"latency_p99_ms":12.5,` +
			`"nodes":{"n1":{"total_requests":3}},"tenants":{"acme":{"total_requests":3}},"unplaced":{"503":1}}}`, ""},
		{"no stats yet", `{"health":"h1","stats":{}}`, ""},
		{"not json", `{`, "stats event"},
		{"no instance", `{"stats":{}}`, "instance id"},
		{"negative count", `{"health":"h1","stats":{"total_requests":-1}}`, "negative count"},
		{"latency not finite", `{"health":"h1","stats":{"latency_p99_ms":1e300}}`, "latency_p99_ms"},
		{"bad node id", `{"health":"h1","stats":{"nodes":{"a b":{}}}}`, "node"},
		{"bad node counters", `{"health":"h1","stats":{"nodes":{"n1":{"retries":-2}}}}`, "node n1"},
		{"empty tenant", `{"health":"h1","stats":{"tenants":{"":{}}}}`, "tenant"},
		{"bad unplaced", `{"health":"h1","stats":{"unplaced":{"5030":1}}}`, "unplaced"},
		{"unknown state", `{"health":"h1","stats":{"state":"fine"}}`, "unknown state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeStatsEvent([]byte(tc.data))
			if tc.want != "" {
				assert.ErrorContains(t, err, tc.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "h1", e.Health)
		})
	}
}

func FuzzDecodeStatsEvent(f *testing.F) {
	f.Add([]byte(`{"health":"h1","ts":"2026-12-01T00:00:00Z","stats":{"state":"ready","total_requests":3,"nodes":{"n1":{"total_requests":3}},"tenants":{"acme":{}},"unplaced":{"503":1}}}`))
	f.Add([]byte(`{"health":"h1","stats":{"nodes":{"bad node":{}}}}`))
	f.Add([]byte(`{"health":"h1","stats":{"latency_p50_ms":-1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeStatsEvent(data)
		if err != nil {
			return
		}
		if e.Health == "" || e.Stats.TotalRequests < 0 || e.Stats.LatencyP99Ms < 0 || len(e.Stats.Tenants) > MaxStatsEntries {
			t.Fatalf("accepted bad stats event %+v", e)
		}
		for id, c := range e.Stats.Nodes {
			if wire.ValidateID("node", id) != nil || c.TotalRequests < 0 {
				t.Fatalf("accepted bad node %q %+v", id, c)
			}
		}
	})
}
