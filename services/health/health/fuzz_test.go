package health

import (
	"testing"

	"github.com/rs/zerolog"
)

func zerologNop() zerolog.Logger { return zerolog.Nop() }

// The decoders take bytes from any NATS client: they must never panic, and
// whatever they accept must be safe for the state machine.
func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add([]byte(`{"node_id":"n1","in_flight":1,"queue_depth":0,"max_concurrency":4,"gpu_utilization":0.5,"throughput_tps":100}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		hb, err := decodeHeartbeat("fed.heartbeat.n1", data)
		if err != nil {
			return
		}
		if hb.NodeID != "n1" || hb.InFlight < 0 || hb.QueueDepth < 0 || hb.GPUUtilization < 0 || hb.ThroughputTPS < 0 {
			t.Fatalf("accepted bad heartbeat %+v", hb)
		}
	})
}

func FuzzDecodeOutcome(f *testing.F) {
	f.Add([]byte(`{"kind":"completed","node_id":"n1","ok":true,"latency_ms":12,"tokens":3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := decodeOutcome("fed.outcome.n1", data)
		if err != nil {
			return
		}
		if o.NodeID != "n1" || o.LatencyMs < 0 || o.TTFTMs < 0 || o.Tokens < 0 || !validCode(o.Code) {
			t.Fatalf("accepted bad outcome %+v", o)
		}
		_ = judge(&o, false)
	})
}

func FuzzDecodeUnplaced(f *testing.F) {
	f.Add([]byte(`{"code":503,"error":"no capacity","attempts":4}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := decodeUnplaced(data)
		if err != nil {
			return
		}
		if u.Attempts < 0 || !validCode(u.Code) {
			t.Fatalf("accepted bad unplaced %+v", u)
		}
	})
}
