package health

import (
	"testing"

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
			hb, err := decodeHeartbeat(c.subj, []byte(c.data))
			if c.errHas == "" {
				require.NoError(t, err)
				assert.Equal(t, "n1", hb.NodeID)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.errHas)
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
			o, err := decodeOutcome("fed.outcome.n1", []byte(c.data))
			if c.errHas == "" {
				require.NoError(t, err)
				assert.Equal(t, "n1", o.NodeID)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.errHas)
		})
	}
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

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	_, err := New(nil, cfg, zerologNop())
	require.Error(t, err)
	cfg.ResetTimeout = 0
	require.ErrorContains(t, cfg.validate(), "reset_timeout")
	cfg = DefaultConfig()
	cfg.FailureThreshold = 0
	require.ErrorContains(t, cfg.validate(), "failure_threshold")
}
