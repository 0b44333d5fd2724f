package health

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Node agents batch their outcomes (a JSON array on fed.outcome.<node>):
// health judges every outcome of a batch as if it had come alone, so the
// same outcomes give the same counts, percentiles and success rate however
// they are batched.
func TestBatchedOutcomesCountAsSingles(t *testing.T) {
	var outs []record.Outcome
	for _, l := range rand.Perm(100) { // 1..100 ms in random order, every 10th a failure
		o := record.Outcome{Kind: record.OutcomeCompleted, NodeID: "n1", OK: true, LatencyMs: float64(l + 1), Tokens: 2, Time: time.Now()}
		if l%10 == 9 {
			o.OK, o.Code, o.Error = false, wire.CodeInternal, "backend failed"
		}
		outs = append(outs, o)
	}
	// judge sends outs in messages of batch outcomes (1: each alone, as an
	// object) to a fresh health and returns what it makes of them.
	judge := func(t *testing.T, batch int) (record.Stats, record.Health) {
		h := newHarness(t)
		h.start(testConfig())
		for rest := outs; len(rest) > 0; {
			n := min(batch, len(rest))
			if n == 1 {
				h.publish(h.sp.Outcome("n1"), rest[0])
			} else {
				h.publish(h.sp.Outcome("n1"), rest[:n])
			}
			rest = rest[n:]
		}
		var st record.Stats
		natsembed.Eventually(t, 0, func() error {
			st = h.stats()
			return natsembed.Check(st.TotalRequests == int64(len(outs)), "stats %+v", st)
		})
		r, werr := h.get("n1")
		require.Nil(t, werr)
		return st, r
	}
	wantSt, want := judge(t, 1)
	assert.Equal(t, int64(90), wantSt.SuccessfulRequests)
	assert.Equal(t, int64(200), wantSt.TotalTokens)
	for _, batch := range []int{2, 7, 32, 100} {
		t.Run(fmt.Sprintf("batches of %d", batch), func(t *testing.T) {
			st, got := judge(t, batch)
			assert.Equal(t, wantSt.SuccessfulRequests, st.SuccessfulRequests)
			assert.Equal(t, wantSt.FailedRequests, st.FailedRequests)
			assert.Equal(t, wantSt.TotalTokens, st.TotalTokens)
			assert.Equal(t, wantSt.LatencyP50Ms, st.LatencyP50Ms)
			assert.Equal(t, wantSt.LatencyP99Ms, st.LatencyP99Ms)
			assert.Equal(t, want.Samples, got.Samples)
			assert.Equal(t, want.LatencyP50Ms, got.LatencyP50Ms, "the percentiles of single outcomes")
			assert.Equal(t, want.LatencyP99Ms, got.LatencyP99Ms)
			assert.Equal(t, want.SuccessRate, got.SuccessRate)
			assert.Equal(t, want.State, got.State)
		})
	}
}

// A bad outcome in a batch is dropped alone: the others count.
func TestBatchWithBadOutcomes(t *testing.T) {
	h := newHarness(t)
	h.start(testConfig())
	good := func(id string) record.Outcome {
		return record.Outcome{Kind: record.OutcomeCompleted, NodeID: "n1", RequestID: id, OK: true, LatencyMs: 10, Time: time.Now()}
	}
	batch := []any{
		good("a"),
		json.RawMessage(`{"kind":"completed","node_id":"n1","code":-7}`),                     // bad code
		record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: "n1", Code: 503},          // not a node's kind
		record.Outcome{Kind: record.OutcomeCompleted, NodeID: "someone-else", OK: true},      // another node
		json.RawMessage(`{"kind":"completed","node_id":"n1","latency_ms":"fast","ok":true}`), // wrong type
		good("b"),
	}
	h.publish(h.sp.Outcome("n1"), batch)
	require.NoError(t, h.nc.Publish(h.sp.Outcome("n1"), []byte(`[{"kind":"completed","ok":true},`))) // broken: nothing
	h.ok("n1", 20)                                                                                   // a marker after them
	var st record.Stats
	natsembed.Eventually(t, 0, func() error {
		st = h.stats()
		return natsembed.Check(st.TotalRequests == 3, "want the 2 good outcomes of the batch and the marker, stats %+v", st)
	})
	assert.Equal(t, int64(3), st.SuccessfulRequests)
	assert.Zero(t, st.DispatchFailures, "dispatch_failed is not taken from fed.outcome.*")
}
