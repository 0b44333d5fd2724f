package health

import (
	"testing"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tripCircuit sends FailureThreshold failures and waits for open.
func tripCircuit(h *harness, id string, cfg Config) *record.Health {
	for i := range cfg.FailureThreshold {
		if i == cfg.FailureThreshold-1 {
			r := h.waitKV(id, "still closed one failure before the threshold", func(r *record.Health) bool {
				return r.ConsecutiveFailures == cfg.FailureThreshold-1
			})
			require.Equal(h.t, record.CircuitClosed, r.Circuit)
		}
		h.fail(id, wire.CodeNoCapacity)
	}
	r := h.waitKV(id, "circuit open", circuitIs(record.CircuitOpen))
	require.False(h.t, r.CircuitOpenedAt.IsZero())
	require.Equal(h.t, cfg.FailureThreshold, r.ConsecutiveFailures)
	return r
}

func TestCircuitOpensAtThreshold(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.ResetTimeout = testConfig().ForgetAfter // stays open for the test
	h.start(cfg)
	r := tripCircuit(h, "n1", cfg)
	assert.Equal(t, record.StateUnhealthy, r.State)
}

func TestCircuitHalfOpenCycle(t *testing.T) {
	cases := []struct {
		name      string
		successes int
		thenFail  bool
		want      string
	}{
		{"two successes stay half_open", 2, false, record.CircuitHalfOpen},
		{"third success closes", 3, false, record.CircuitClosed},
		{"failure in half_open reopens", 1, true, record.CircuitOpen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := testConfig()
			s := h.start(cfg)
			opened := tripCircuit(h, "n1", cfg)
			half := h.waitKV("n1", "half_open after reset timeout", circuitIs(record.CircuitHalfOpen))
			assert.Equal(t, record.StateDegraded, half.State, "routable, so the router can send its probe request")

			for range c.successes {
				h.ok("n1", 10)
			}
			if c.thenFail {
				h.fail("n1", wire.CodeInternal)
				r := h.waitKV("n1", "reopened", func(r *record.Health) bool {
					return r.Circuit == record.CircuitOpen && r.CircuitOpenedAt.After(opened.CircuitOpenedAt)
				})
				assert.Equal(t, record.CircuitOpen, r.Circuit)
				return
			}
			natsembed.Eventually(t, 0, func() error {
				m, _ := inMemory(s, "n1")
				return natsembed.Check(m.ConsecutiveSuccess == c.successes, "consecutive successes %d, want %d", m.ConsecutiveSuccess, c.successes)
			})
			r := h.waitKV("n1", c.want, circuitIs(c.want))
			if c.want == record.CircuitHalfOpen {
				// Still half_open well after the successes were applied.
				m, _ := inMemory(s, "n1")
				assert.Equal(t, record.CircuitHalfOpen, m.Circuit)
			} else {
				assert.True(t, r.CircuitOpenedAt.IsZero())
			}
		})
	}
}

func TestBreakerThresholdsConfigurable(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig()
	cfg.FailureThreshold = 2
	cfg.ResetTimeout = testConfig().ForgetAfter
	h.start(cfg)
	h.fail("n1", wire.CodeInternal)
	h.fail("n1", wire.CodeInternal)
	r := h.waitKV("n1", "open after 2", circuitIs(record.CircuitOpen))
	assert.Equal(t, 2, r.ConsecutiveFailures)
}
