package health

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTwoInstancesConverge(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.ResetTimeout = time.Hour
	s1 := h.start(cfg)
	s2 := h.start(cfg)

	const nodes = 10
	for round := range 5 {
		for i := range nodes {
			id := fmt.Sprintf("n%d", i)
			h.publish(h.sp.Heartbeat(id), record.Heartbeat{NodeID: id, QueueDepth: round, Time: time.Now()})
			if i%2 == 0 {
				h.fail(id, wire.CodeInternal)
			} else {
				h.ok(id, float64(10*(round+1)))
			}
		}
	}
	for i := range nodes {
		id := fmt.Sprintf("n%d", i)
		var want func(r *record.Health) bool
		if i%2 == 0 {
			want = func(r *record.Health) bool {
				return r.Circuit == record.CircuitOpen && r.ConsecutiveFailures == 5 && r.QueueDepth == 4
			}
		} else {
			want = func(r *record.Health) bool {
				return r.State == record.StateHealthy && r.Samples == 5 && r.LatencyP99Ms == 50 && r.QueueDepth == 4
			}
		}
		kv := h.waitKV(id, "every event reflected", want)
		// Each instance folds the same events on its own, so one may still be
		// a few events behind the one whose write the bucket shows: wait for
		// it to catch up rather than compare at one instant.
		for k, s := range []*Service{s1, s2} {
			natsembed.Eventually(t, 0, func() error {
				m, ok := inMemory(s, id)
				return natsembed.Check(ok && sameForRouting(kv, &m),
					"instance %d agrees with fed_health on %s:\nkv  %+v\nmem %+v", k+1, id, kv, m)
			})
		}
	}

	// A third instance started now inherits the verdicts from fed_health.
	s3 := h.start(cfg)
	m, ok := inMemory(s3, "n0")
	require.True(t, ok)
	assert.Equal(t, record.CircuitOpen, m.Circuit)
	assert.Equal(t, record.StateUnhealthy, m.State)
	assert.Equal(t, 5, m.ConsecutiveFailures)
	m, _ = inMemory(s3, "n1")
	assert.Equal(t, 50.0, m.LatencyP99Ms, "percentiles kept until it has samples of its own")
	assert.Equal(t, 5, m.Samples)
}

// Conflicts with another writer: a value reflecting a newer event is left
// alone, an older one is replaced; neither is written over blindly.
func TestWriteConflictResolution(t *testing.T) {
	h := newHarness(t)
	s := h.start(testConfig())
	h.ok("n1", 10)
	h.ok("n1", 10)
	h.waitKV("n1", "healthy", stateIs(record.StateHealthy))

	put := func(at time.Time) uint64 {
		foreign := record.Health{NodeID: "n1", State: record.StateUnhealthy, Circuit: record.CircuitClosed,
			ConsecutiveFailures: 3, UpdatedAt: at}
		data, err := json.Marshal(foreign)
		require.NoError(t, err)
		rev, err := h.kv.Put(context.Background(), buckets.NodeKey("n1"), data)
		require.NoError(t, err)
		return rev
	}
	kvRev := func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.nodes["n1"].kvRev
	}

	// Newer foreign value: the instance's write (stale revision) conflicts,
	// it re-reads, and leaves the newer value in place.
	rev := put(time.Now().Add(30 * time.Second))
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", QueueDepth: 9, Time: time.Now()})
	natsembed.Eventually(t, 0, func() error { return natsembed.Check(kvRev() == rev, "conflict seen and value re-read") })
	time.Sleep(3 * testConfig().HeartbeatInterval) // several flushes
	r := h.record("n1")
	assert.Equal(t, record.StateUnhealthy, r.State, "newer foreign verdict kept")
	m, _ := inMemory(s, "n1")
	assert.Equal(t, record.StateHealthy, m.State, "memory is not merged")
	assert.Equal(t, 3, r.ConsecutiveFailures)

	// An event newer than the foreign value: the instance writes again.
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", QueueDepth: 10, Time: time.Now().Add(45 * time.Second)})
	r = h.waitKV("n1", "own newer record written", stateIs(record.StateHealthy))
	assert.Equal(t, 10, r.QueueDepth)
	assert.Zero(t, r.ConsecutiveFailures)

	// Older foreign value: replaced at the next change.
	put(time.Now().Add(-time.Minute))
	h.publish(h.sp.Heartbeat("n1"), record.Heartbeat{NodeID: "n1", QueueDepth: 11, Time: time.Now().Add(50 * time.Second)})
	r = h.waitKV("n1", "older foreign value replaced", func(r *record.Health) bool { return r.QueueDepth == 11 })
	assert.Equal(t, record.StateHealthy, r.State)
}
