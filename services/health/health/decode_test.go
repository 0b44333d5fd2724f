package health

import (
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJudge(t *testing.T) {
	cases := []struct {
		name     string
		o        record.Outcome
		draining bool
		want     verdict
	}{
		{"completed ok", record.Outcome{Kind: record.OutcomeCompleted, OK: true}, false, success},
		{"500", record.Outcome{Kind: record.OutcomeCompleted, Code: 500}, false, failure},
		{"503", record.Outcome{Kind: record.OutcomeCompleted, Code: 503}, false, failure},
		{"504", record.Outcome{Kind: record.OutcomeCompleted, Code: 504}, false, failure},
		{"no code", record.Outcome{Kind: record.OutcomeCompleted}, false, failure},
		{"400", record.Outcome{Kind: record.OutcomeCompleted, Code: 400}, false, neutral},
		{"403", record.Outcome{Kind: record.OutcomeCompleted, Code: 403}, false, neutral},
		{"429", record.Outcome{Kind: record.OutcomeCompleted, Code: 429}, false, neutral},
		{"499 canceled", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeCanceled}, false, neutral},
		{"503 while draining", record.Outcome{Kind: record.OutcomeCompleted, Code: 503}, true, neutral},
		{"dispatch no responders", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 503}, false, failure},
		{"dispatch ack timeout", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 504}, false, failure},
		{"dispatch without code", record.Outcome{Kind: record.OutcomeDispatchFailed}, false, failure},
		{"dispatch busy", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 429}, false, neutral},
		{"dispatch draining", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 503, Error: "Draining"}, false, neutral},
		{"duplicate", record.Outcome{Kind: record.OutcomeDuplicate}, false, neutral},
		{"probe ok", record.Outcome{Kind: record.OutcomeProbe, OK: true}, false, success},
		{"probe failed", record.Outcome{Kind: record.OutcomeProbe, Code: 504}, false, failure},
		// Blame only the node's own failures: what the request caused is neutral.
		{"504 client fault (deadline too short)", record.Outcome{Kind: record.OutcomeCompleted, Code: 504, Fault: record.FaultClient}, false, neutral},
		{"500 client fault", record.Outcome{Kind: record.OutcomeCompleted, Code: 500, Fault: record.FaultClient}, false, neutral},
		{"no code client fault", record.Outcome{Kind: record.OutcomeCompleted, Fault: record.FaultClient}, false, neutral},
		{"504 node fault", record.Outcome{Kind: record.OutcomeCompleted, Code: 504, Fault: record.FaultNode}, false, failure},
		{"503 node fault", record.Outcome{Kind: record.OutcomeCompleted, Code: 503, Fault: record.FaultNode}, false, failure},
		{"413 completed", record.Outcome{Kind: record.OutcomeCompleted, Code: wire.CodeTooLarge}, false, neutral},
		{"dispatch 413 too large", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: wire.CodeTooLarge}, false, neutral},
		{"dispatch 503 client fault", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 503, Fault: record.FaultClient}, false, neutral},
		{"dispatch 504 node fault", record.Outcome{Kind: record.OutcomeDispatchFailed, Code: 504, Fault: record.FaultNode}, false, failure},
		{"probe 504 client fault", record.Outcome{Kind: record.OutcomeProbe, Code: 504, Fault: record.FaultClient}, false, neutral},
		{"ok with client fault is a success", record.Outcome{Kind: record.OutcomeCompleted, OK: true, Fault: record.FaultClient}, false, success},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, judge(&c.o, c.draining))
		})
	}
}

func TestDecodeHeartbeat(t *testing.T) {
	cases := []struct {
		name, subj, data, errHas string
	}{
		{"ok", "fed.heartbeat.n1", `{"node_id":"n1","in_flight":2}`, ""},
		{"node from subject", "fed.heartbeat.n1", `{}`, ""},
		{"bad json", "fed.heartbeat.n1", `{`, "heartbeat on"},
		{"other node", "fed.heartbeat.n1", `{"node_id":"n2"}`, "names node"},
		{"bad subject id", "fed.heartbeat.n$1", `{}`, "node_id"},
		{"negative", "fed.heartbeat.n1", `{"queue_depth":-1}`, "negative"},
		{"negative tps", "fed.heartbeat.n1", `{"throughput_tps":-1}`, "throughput_tps"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hb, err := record.DecodeHeartbeat(c.subj, []byte(c.data))
			assertDecoded(t, hb.NodeID, err, c.errHas)
		})
	}
}

func TestDecodeOutcome(t *testing.T) {
	cases := []struct {
		name, data, errHas string
	}{
		{"ok", `{"kind":"completed","ok":true,"latency_ms":12.5}`, ""},
		{"unknown kind", `{"kind":"boom"}`, "unknown kind"},
		{"missing kind", `{}`, "unknown kind"},
		{"bad code", `{"kind":"completed","code":99}`, "bad code"},
		{"negative tokens", `{"kind":"completed","tokens":-1}`, "tokens"},
		{"negative latency", `{"kind":"completed","latency_ms":-1}`, "latency_ms"},
		{"wrong type", `{"kind":"completed","ok":"yes"}`, "outcome on"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := record.DecodeOutcome("fed.outcome.n1", []byte(c.data))
			assertDecoded(t, o.NodeID, err, c.errHas)
		})
	}
}

// assertDecoded checks one decoder case: accepted as node n1 when errHas
// is empty, else refused with an error containing errHas.
func assertDecoded(t *testing.T, nodeID string, err error, errHas string) {
	t.Helper()
	if errHas == "" {
		require.NoError(t, err)
		assert.Equal(t, "n1", nodeID)
		return
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), errHas)
}

func TestWindowPercentiles(t *testing.T) {
	cases := []struct {
		name    string
		size    int
		samples []float64
		p50     float64
		p99     float64
	}{
		{"empty", 10, nil, 0, 0},
		{"one", 10, []float64{7}, 7, 7},
		{"two", 10, []float64{1, 9}, 1, 9},
		{"slides", 3, []float64{100, 100, 100, 1, 2, 3}, 2, 3},
		{"unsorted", 10, []float64{5, 1, 4, 2, 3}, 3, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWindow(c.size)
			for _, v := range c.samples {
				w.add(v)
			}
			got := w.percentiles(50, 99)
			assert.Equal(t, []float64{c.p50, c.p99}, got)
			assert.LessOrEqual(t, w.len(), c.size)
		})
	}
}

func TestOutcomesRate(t *testing.T) {
	o := outcomes{size: 4}
	assert.Equal(t, 1.0, o.rate())
	for _, v := range []bool{false, false, true, true, true, true} {
		o.add(v)
	}
	assert.Equal(t, 1.0, o.rate(), "the two failures slid out")
	o.add(false)
	assert.Equal(t, 0.75, o.rate())
}

func TestNewRefusesNilConnection(t *testing.T) {
	_, err := New(nil, DefaultConfig(), natsembed.Logger(t))
	require.Error(t, err)
}

// A zero field means its default, so Config{} is DefaultConfig().
func TestZeroConfigIsDefault(t *testing.T) {
	require.NoError(t, Config{}.Validate())
	assert.Equal(t, DefaultConfig(), Config{}.withDefaults())
	cfg := Config{ResetTimeout: time.Minute}.withDefaults()
	assert.Equal(t, time.Minute, cfg.ResetTimeout, "a set field is kept")
	assert.Equal(t, DefaultFailureThreshold, cfg.FailureThreshold)
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(c *Config)
		errHas string // "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero means default", func(c *Config) { c.ResetTimeout, c.FailureThreshold = 0, 0 }, ""},
		{"negative heartbeat interval", func(c *Config) { c.HeartbeatInterval = -time.Second }, "heartbeat_interval"},
		{"negative degraded latency", func(c *Config) { c.DegradedLatency = -1 }, "degraded_latency"},
		{"negative reset timeout", func(c *Config) { c.ResetTimeout = -time.Second }, "reset_timeout"},
		{"negative check interval", func(c *Config) { c.CheckInterval = -1 }, "check_interval"},
		{"negative probe timeout", func(c *Config) { c.ProbeTimeout = -1 }, "probe_timeout"},
		{"negative forget after", func(c *Config) { c.ForgetAfter = -1 }, "forget_after"},
		{"negative missed heartbeats", func(c *Config) { c.MissedHeartbeats = -1 }, "missed_heartbeats"},
		{"negative healthy after", func(c *Config) { c.HealthyAfter = -1 }, "healthy_after"},
		{"negative unhealthy after", func(c *Config) { c.UnhealthyAfter = -1 }, "unhealthy_after"},
		{"negative failure threshold", func(c *Config) { c.FailureThreshold = -1 }, "failure_threshold"},
		{"negative half-open successes", func(c *Config) { c.HalfOpenSuccesses = -1 }, "half_open_successes"},
		{"negative latency window", func(c *Config) { c.LatencyWindow = -1 }, "latency_window"},
		{"negative model window", func(c *Config) { c.ModelWindow = -1 }, "model_window"},
		{"negative write concurrency", func(c *Config) { c.WriteConcurrency = -1 }, "write_concurrency"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.change(&cfg)
			err := cfg.Validate()
			if c.errHas == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "health config: "+c.errHas)
		})
	}
}

// New refuses a bad value by its field name.
func TestNewRefusesBadConfig(t *testing.T) {
	srv := natsembed.StartForTest(t)
	cfg := DefaultConfig()
	cfg.ResetTimeout = -time.Second
	_, err := New(natsembed.ConnectForTest(t, srv), cfg, natsembed.Logger(t))
	require.ErrorContains(t, err, "reset_timeout")
	cfg = DefaultConfig()
	cfg.FailureThreshold = -1
	_, err = New(natsembed.ConnectForTest(t, srv), cfg, natsembed.Logger(t))
	require.ErrorContains(t, err, "failure_threshold")
}
