package health

import (
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Version is what `nats micro info fed-health` reports.
const Version = "0.1.0"

// Config tunes the health service. Defaults are DESIGN §6.
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// HeartbeatInterval is the nodes' heartbeat period (1 s). It also paces
	// the non-urgent KV writes: at most one per node per interval.
	HeartbeatInterval time.Duration
	// MissedHeartbeats without a sign of life make a node unhealthy (3).
	MissedHeartbeats int
	// DegradedLatency: a success slower than this makes a node degraded (1 s).
	DegradedLatency time.Duration
	// HealthyAfter consecutive successes make a node healthy (2).
	HealthyAfter int
	// UnhealthyAfter consecutive failures make a node unhealthy (3); fewer make it degraded.
	UnhealthyAfter int
	// FailureThreshold consecutive failures open the circuit (5).
	FailureThreshold int
	// ResetTimeout moves an open circuit to half_open (30 s).
	ResetTimeout time.Duration
	// HalfOpenSuccesses successful probe requests close a half-open circuit (3).
	HalfOpenSuccesses int
	// CheckInterval is the period of active probes of silent nodes (10 s).
	CheckInterval time.Duration
	// ProbeTimeout bounds one probe (5 s).
	ProbeTimeout time.Duration
	// LatencyWindow is how many recent requests the percentiles and the
	// success rate cover (1000).
	LatencyWindow int
	// ForgetAfter: a node no longer in the catalog and silent this long is
	// dropped from memory and from fed_health (30 s).
	ForgetAfter time.Duration
	// WriteConcurrency bounds the KV writes in flight during a flush, and
	// the probes in flight (16).
	WriteConcurrency int
	// Buckets are the options passed to buckets.Ensure.
	Buckets buckets.Options
}

// DefaultConfig returns the DESIGN defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: time.Second,
		MissedHeartbeats:  3,
		DegradedLatency:   time.Second,
		HealthyAfter:      2,
		UnhealthyAfter:    3,
		FailureThreshold:  5,
		ResetTimeout:      30 * time.Second,
		HalfOpenSuccesses: 3,
		CheckInterval:     10 * time.Second,
		ProbeTimeout:      5 * time.Second,
		LatencyWindow:     1000,
		ForgetAfter:       30 * time.Second,
		WriteConcurrency:  16,
	}
}

func (c *Config) validate() error {
	durs := []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat_interval", c.HeartbeatInterval}, {"degraded_latency", c.DegradedLatency},
		{"reset_timeout", c.ResetTimeout}, {"check_interval", c.CheckInterval},
		{"probe_timeout", c.ProbeTimeout}, {"forget_after", c.ForgetAfter},
	}
	for _, d := range durs {
		if d.v <= 0 {
			return fmt.Errorf("health config: %s must be > 0, got %s", d.name, d.v)
		}
	}
	ints := []struct {
		name string
		v    int
	}{
		{"missed_heartbeats", c.MissedHeartbeats}, {"healthy_after", c.HealthyAfter},
		{"unhealthy_after", c.UnhealthyAfter}, {"failure_threshold", c.FailureThreshold},
		{"half_open_successes", c.HalfOpenSuccesses}, {"latency_window", c.LatencyWindow},
		{"write_concurrency", c.WriteConcurrency},
	}
	for _, i := range ints {
		if i.v < 1 {
			return fmt.Errorf("health config: %s must be >= 1, got %d", i.name, i.v)
		}
	}
	return nil
}

// staleAfter is how long a node may stay silent before it is unhealthy.
func (c *Config) staleAfter() time.Duration {
	return time.Duration(c.MissedHeartbeats) * c.HeartbeatInterval
}

// tick is the period of the service's single loop: fine enough that timer
// transitions (stale, half_open) land within a quarter interval.
func (c *Config) tick() time.Duration {
	t := min(c.HeartbeatInterval, c.ResetTimeout, c.CheckInterval, c.ProbeTimeout) / 4
	return max(t, 5*time.Millisecond)
}
