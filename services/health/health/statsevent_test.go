package health

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
)

// statsEvents collects what arrives on fed.health.stats, in order.
type statsEvents struct {
	mu  sync.Mutex
	evs []record.StatsEvent
	raw [][]byte
	at  []time.Time
}

func (h *harness) followStats() *statsEvents {
	h.t.Helper()
	c := &statsEvents{}
	sub, err := h.nc.Subscribe(h.sp.HealthStats(), func(m *nats.Msg) {
		e, err := record.DecodeStatsEvent(m.Data)
		assert.NoError(h.t, err, "health publishes what readers accept")
		var raw struct {
			Stats json.RawMessage `json:"stats"`
		}
		assert.NoError(h.t, json.Unmarshal(m.Data, &raw))
		c.mu.Lock()
		c.evs, c.raw, c.at = append(c.evs, e), append(c.raw, raw.Stats), append(c.at, time.Now())
		c.mu.Unlock()
	})
	require.NoError(h.t, err)
	require.NoError(h.t, h.nc.Flush())
	h.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *statsEvents) snapshot() ([]record.StatsEvent, [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record.StatsEvent(nil), c.evs...), append([][]byte(nil), c.raw...)
}

// Issue 17: top used to ask fed.stats every second. Each health instance
// now publishes its answer on fed.health.stats: once at start, then when
// it changed, at most once a second, and nothing while the mesh is quiet.
func TestStatsEventFollowsTheCounters(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"n0", "n1", "n2"} {
		h.register(id)
	}
	got := h.followStats()
	s := h.start(testConfig())

	natsembed.Eventually(t, 0, func() error {
		evs, _ := got.snapshot()
		return natsembed.Check(len(evs) >= 1, "no stats event at start")
	})
	evs, _ := got.snapshot()
	assert.Equal(t, s.instance, evs[0].Health)
	assert.Zero(t, evs[0].Stats.TotalRequests)
	assert.WithinDuration(t, time.Now(), evs[0].TS, 10*time.Second)

	want := h.traffic(0, 50)
	natsembed.Eventually(t, 5*time.Second, func() error {
		evs, _ := got.snapshot()
		last := evs[len(evs)-1].Stats
		return natsembed.Check(last.TotalRequests == want && last.DispatchFailures > 0,
			"last event: total_requests %d (want %d), dispatch_failures %d", last.TotalRequests, want, last.DispatchFailures)
	})
	last, _ := got.snapshot()
	assert.Equal(t, statsOf(s).Tenants, last[len(last)-1].Stats.Tenants, "the event is the fed.stats answer")

	// Quiet: no new event (the loop ticks every 12 ms meanwhile).
	time.Sleep(2*StatsEventEvery + 200*time.Millisecond)
	evs, raw := got.snapshot()
	assert.Len(t, evs, len(last), "events while nothing changed")

	// Every event differs from the one before and comes at least a second
	// after it (health's own timestamps: wall-clock, while health spaces
	// events by the monotonic clock, so the two may differ by a hair; a run
	// measured 999.999949 ms).
	for i := 1; i < len(evs); i++ {
		assert.False(t, bytes.Equal(raw[i-1], raw[i]), "event %d repeats event %d", i, i-1)
		assert.GreaterOrEqual(t, evs[i].TS.Sub(evs[i-1].TS), StatsEventEvery-time.Millisecond, "events %d and %d", i-1, i)
	}

	// A change after the quiet spell is published again.
	h.traffic(1, 1)
	natsembed.Eventually(t, 5*time.Second, func() error {
		evs, _ := got.snapshot()
		return natsembed.Check(evs[len(evs)-1].Stats.TotalRequests == want+1, "no event after the quiet spell")
	})
}
