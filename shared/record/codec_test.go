package record

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sameAsJSON fails t when the fast path took data and decoded it otherwise
// than encoding/json does: the fast path may only ever be a shortcut.
func sameAsJSON(t *testing.T, data []byte) {
	t.Helper()
	var fast Outcome
	if parseOutcome(data, &fast) {
		var viaJSON Outcome
		if err := json.Unmarshal(data, &viaJSON); err != nil {
			t.Fatalf("fast path took %q, which encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(fast, viaJSON) {
			t.Fatalf("fast path decoded %q as %+v, encoding/json as %+v", data, fast, viaJSON)
		}
	}
	if batch, ok := parseOutcomeBatch(data); ok {
		var viaJSON []Outcome
		if err := json.Unmarshal(data, &viaJSON); err != nil {
			t.Fatalf("fast path took batch %q, which encoding/json refuses: %v", data, err)
		}
		if !reflect.DeepEqual(batch, viaJSON) {
			t.Fatalf("fast path decoded batch %q as %+v, encoding/json as %+v", data, batch, viaJSON)
		}
	}
}

// What node agents send takes the fast path; what it does not know goes to
// encoding/json, with the same result either way.
func TestOutcomeFastPath(t *testing.T) {
	sent := Outcome{Kind: OutcomeCompleted, NodeID: "n1", RequestID: "r-1", OK: false, Code: 503, Error: "busy",
		Capability: "generate", Model: "m", Tenant: "t", Attempt: 2, LatencyMs: 1.25, TTFTMs: 0.5, Tokens: 7,
		Stream: true, Fault: FaultNode, Silent: true, AtOnce: true, InstanceID: "i-1",
		Time: time.Date(2026, 12, 4, 1, 2, 3, 456789000, time.UTC)}
	b, err := EncodeOutcomes([]Outcome{sent})
	require.NoError(t, err)
	var got Outcome
	require.True(t, parseOutcome(b, &got), "what a node sends takes the fast path: %s", b)
	assert.Equal(t, sent, got)
	batch, err := EncodeOutcomes([]Outcome{sent, {Kind: OutcomeCompleted, NodeID: "n1", OK: true}})
	require.NoError(t, err)
	all, ok := parseOutcomeBatch(batch)
	require.True(t, ok)
	assert.Equal(t, []Outcome{sent, {Kind: OutcomeCompleted, NodeID: "n1", OK: true}}, all)

	for _, tc := range []struct {
		name string
		data string
		fast bool
	}{
		{"plain", `{"kind":"completed","ok":true,"latency_ms":12,"ts":"2026-12-01T00:00:00Z"}`, true},
		{"whitespace everywhere", " {\n\"kind\" : \"completed\" ,\t\"ok\":true } \r\n", true},
		{"a key twice keeps the last", `{"kind":"probe","kind":"completed"}`, true},
		{"empty", `{}`, true},
		{"negative zero", `{"latency_ms":-0,"code":-0}`, true},
		{"exponent float", `{"latency_ms":1.5e3}`, true},
		{"a key in another case", `{"KIND":"completed"}`, false},
		{"an unknown key", `{"kind":"completed","extra":{"a":[1]}}`, false},
		{"an escape", `{"kind":"compl\u0065ted"}`, false},
		{"UTF-8", `{"kind":"completed","tenant":"é"}`, false},
		{"null", `{"kind":null}`, false},
		{"a fraction into an int", `{"tokens":1.0}`, false},
		{"a huge int", `{"tokens":123456789012345678901234567890}`, false},
		{"a leading zero", `{"tokens":01}`, false},
		{"a string for a number", `{"tokens":"3"}`, false},
		{"a number for a bool", `{"ok":1}`, false},
		{"a literal run on", `{"ok":truex}`, false},
		{"a bad time", `{"ts":"yesterday"}`, false},
		{"trailing comma", `{"kind":"completed",}`, false},
		{"trailing data", `{"kind":"completed"}x`, false},
		{"unterminated", `{"kind":"completed"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o Outcome
			assert.Equal(t, tc.fast, parseOutcome([]byte(tc.data), &o))
			sameAsJSON(t, []byte(tc.data))
		})
	}
}

// The encoder writes json.Marshal's bytes, or hands the batch to it.
func TestEncodeOutcomesIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 4, 1, 2, 3, 0, time.UTC)
	for _, tc := range []struct {
		name string
		out  []Outcome
	}{
		{"zero", []Outcome{{}}},
		{"typical", []Outcome{{Kind: OutcomeCompleted, NodeID: "n1", RequestID: "r", OK: true, LatencyMs: 3.25, Tokens: 9, Time: at}}},
		{"a batch", []Outcome{{Kind: OutcomeCompleted, NodeID: "n1"}, {Kind: OutcomeProbe, NodeID: "n1", Code: 500, Error: "x"}}},
		{"an escape", []Outcome{{Kind: OutcomeCompleted, Error: `say "no" <b>&`}}},
		{"UTF-8", []Outcome{{Kind: OutcomeCompleted, Tenant: "é\u2028"}}},
		{"a tiny float", []Outcome{{LatencyMs: 1e-9}}},
		{"a huge float", []Outcome{{LatencyMs: 1e22}}},
		{"a local time", []Outcome{{Time: at.In(time.FixedZone("x", 3600))}}},
		{"negative", []Outcome{{Code: -1, LatencyMs: -2.5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeOutcomes(tc.out)
			require.NoError(t, err)
			var want []byte
			if len(tc.out) == 1 {
				want, err = json.Marshal(tc.out[0])
			} else {
				want, err = json.Marshal(tc.out)
			}
			require.NoError(t, err)
			assert.Equal(t, string(want), string(got))
		})
	}
	_, err := EncodeOutcomes([]Outcome{{LatencyMs: math.NaN()}})
	assert.Error(t, err, "as json.Marshal")
}

func TestEncodeDecisionsIsJSONMarshal(t *testing.T) {
	at := time.Date(2026, 12, 4, 1, 2, 3, 5, time.UTC)
	typical := Decision{RequestID: "r", Capability: "generate", Model: "m", Node: "n1", Score: 0.8125,
		DecidedBy: "latency", Strategy: "weighted", Attempts: 1, QueuedMs: 0.5, Time: at}
	for _, tc := range []struct {
		name string
		d    Decisions
	}{
		{"none", Decisions{Router: "r1"}},
		{"empty", Decisions{Router: "r1", Decisions: []Decision{}}},
		{"zero", Decisions{Decisions: []Decision{{}}}},
		{"typical", Decisions{Router: "r1", Decisions: []Decision{typical, typical}}},
		{"an escape", Decisions{Router: "r<1>", Decisions: []Decision{typical}}},
		{"a tiny score", Decisions{Router: "r1", Decisions: []Decision{{Score: 1e-7}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeDecisions(&tc.d)
			require.NoError(t, err)
			want, err := json.Marshal(&tc.d)
			require.NoError(t, err)
			assert.Equal(t, string(want), string(got))
		})
	}
}

// FuzzEncode: EncodeOutcomes and EncodeDecisions write json.Marshal's
// bytes (or its error) for any values.
func FuzzEncode(f *testing.F) {
	f.Add("completed", "n1", "r-1", "", 0, 2, 1.5, 0.25, int64(1764806400123456789), true, byte(0), uint8(1))
	f.Add("probe", "n<1>", "r\"", "é", 503, 0, 1e-7, 1e21, int64(-1), false, byte(0xff), uint8(3))
	f.Fuzz(func(t *testing.T, kind, node, req, errText string, code, tokens int, lat, ttft float64, nanos int64, ok bool, flags byte, n uint8) {
		at := time.Unix(0, nanos).UTC()
		if flags&1 != 0 {
			at = at.In(time.FixedZone("z", int(nanos%86400)))
		}
		o := Outcome{Kind: kind, NodeID: node, RequestID: req, OK: ok, Code: code, Error: errText, Tokens: tokens,
			LatencyMs: lat, TTFTMs: ttft, Stream: flags&2 != 0, Silent: flags&4 != 0, AtOnce: flags&8 != 0, Time: at}
		out := make([]Outcome, 1+int(n%4))
		for i := range out {
			out[i] = o
			out[i].Attempt = i
		}
		got, err := EncodeOutcomes(out)
		var want []byte
		var werr error
		if len(out) == 1 {
			want, werr = json.Marshal(out[0])
		} else {
			want, werr = json.Marshal(out)
		}
		if (err == nil) != (werr == nil) || string(got) != string(want) {
			t.Fatalf("EncodeOutcomes = %q, %v; json.Marshal = %q, %v", got, err, want, werr)
		}
		if err == nil {
			sameAsJSON(t, got)
		}

		d := Decision{RequestID: req, Capability: kind, Node: node, Score: lat, DecidedBy: errText, Attempts: code,
			QueuedMs: ttft, PrefixMatch: float64(tokens), Time: at}
		ds := &Decisions{Router: node}
		if flags&16 == 0 {
			ds.Decisions = make([]Decision, int(n%4))
			for i := range ds.Decisions {
				ds.Decisions[i] = d
				ds.Decisions[i].Attempts = i
			}
		}
		got, err = EncodeDecisions(ds)
		want, werr = json.Marshal(ds)
		if (err == nil) != (werr == nil) || string(got) != string(want) {
			t.Fatalf("EncodeDecisions = %q, %v; json.Marshal = %q, %v", got, err, want, werr)
		}
	})
}

// Side by side in one run: the codec against encoding/json, for a batch of
// 8 outcomes as a node agent sends them and 32 decisions as a router does.
func BenchmarkCodec(b *testing.B) {
	o := Outcome{Kind: OutcomeCompleted, NodeID: "node-1", RequestID: "req-0123456789abcdefghij", OK: true,
		Capability: "generate", Model: "llama-3-8b", Attempt: 1, LatencyMs: 0.123, Tokens: 16, AtOnce: true,
		Time: time.Now().UTC()}
	batch := make([]Outcome, 8)
	for i := range batch {
		batch[i] = o
	}
	data, err := json.Marshal(batch)
	require.NoError(b, err)
	subj := "fed.outcome.node-1"
	b.Run("decode/codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeOutcomes(subj, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			all := make([]Outcome, 0, OutcomesHint(data))
			if err := json.Unmarshal(data, &all); err != nil {
				b.Fatal(err)
			}
			for i := range all {
				if err := all[i].check(subj); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("encode/codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeOutcomes(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	d := Decision{RequestID: o.RequestID, Capability: o.Capability, Model: o.Model, Node: o.NodeID, Score: 0.8125,
		DecidedBy: "latency", Strategy: "weighted", Attempts: 1, Time: o.Time}
	ds := &Decisions{Router: "router-1", Decisions: make([]Decision, 32)}
	for i := range ds.Decisions {
		ds.Decisions[i] = d
	}
	b.Run("decisions/codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeDecisions(ds); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decisions/encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ds); err != nil {
				b.Fatal(err)
			}
		}
	})
}
