package health

import (
	"testing"

	"github.com/fedmesh/fedmesh/shared/record"
)

// FuzzJudge: outcomes come from any NATS client. The decoders themselves are
// fuzzed in shared/record; here whatever they accept must be judged without
// panicking, into one of the three verdicts.
func FuzzJudge(f *testing.F) {
	f.Add([]byte(`{"kind":"completed","node_id":"n1","ok":true,"latency_ms":12,"tokens":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := record.DecodeOutcome("fed.outcome.n1", data)
		if err != nil {
			return
		}
		if o.NodeID != "n1" || o.LatencyMs < 0 || o.TTFTMs < 0 || o.Tokens < 0 || !validCode(o.Code) {
			t.Fatalf("accepted bad outcome %+v", o)
		}
		for _, draining := range []bool{false, true} {
			if v := judge(&o, draining); v != neutral && v != success && v != failure {
				t.Fatalf("judge(%+v) = %v", o, v)
			}
		}
	})
}

// validCode is the wire-code rule events must obey: none, or three digits.
func validCode(c int) bool { return c == 0 || (c >= 100 && c <= 999) }
