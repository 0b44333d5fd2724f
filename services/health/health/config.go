package health

import (
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Version is what `nats micro info fed-health` reports.
const Version = "0.1.0"

// The DESIGN §6 defaults; a zero Config field means its default.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultMissedHeartbeats  = 3
	DefaultDegradedLatency   = time.Second
	DefaultHealthyAfter      = 2
	DefaultUnhealthyAfter    = 3
	DefaultFailureThreshold  = 5
	DefaultResetTimeout      = 30 * time.Second
	DefaultHalfOpenSuccesses = 3
	DefaultCheckInterval     = 10 * time.Second
	DefaultProbeTimeout      = 5 * time.Second
	DefaultLatencyWindow     = 1000
	DefaultModelWindow       = 256
	DefaultForgetAfter       = 30 * time.Second
	DefaultWriteConcurrency  = 16
)

// Config tunes the health service. A zero field means its Default*
// constant, so Config{} is DefaultConfig(); negative values are errors.
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
	// ModelWindow is how many recent requests each capability/model's
	// statistics cover (256): up to record.MaxModelStats of them per node,
	// so smaller than LatencyWindow to bound memory.
	ModelWindow int
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
	return Config{}.withDefaults()
}

// withDefaults fills every zero field from its Default* constant.
func (c Config) withDefaults() Config {
	durs, ints := c.fields()
	for _, d := range durs {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, i := range ints {
		if *i.v == 0 {
			*i.v = i.def
		}
	}
	return c
}

// Validate reports the first negative field by its name; zero fields are
// valid (they mean the default).
func (c Config) Validate() error {
	durs, ints := c.fields()
	for _, d := range durs {
		if *d.v < 0 {
			return fmt.Errorf("health config: %s must be >= 0, got %s", d.name, *d.v)
		}
	}
	for _, i := range ints {
		if *i.v < 0 {
			return fmt.Errorf("health config: %s must be >= 0, got %d", i.name, *i.v)
		}
	}
	return nil
}

type durationField struct {
	name string
	v    *time.Duration
	def  time.Duration
}

type intField struct {
	name string
	v    *int
	def  int
}

// fields lists c's tunables with their names and defaults, the one table
// withDefaults and Validate both walk.
func (c *Config) fields() ([]durationField, []intField) {
	return []durationField{
			{"heartbeat_interval", &c.HeartbeatInterval, DefaultHeartbeatInterval},
			{"degraded_latency", &c.DegradedLatency, DefaultDegradedLatency},
			{"reset_timeout", &c.ResetTimeout, DefaultResetTimeout},
			{"check_interval", &c.CheckInterval, DefaultCheckInterval},
			{"probe_timeout", &c.ProbeTimeout, DefaultProbeTimeout},
			{"forget_after", &c.ForgetAfter, DefaultForgetAfter},
		}, []intField{
			{"missed_heartbeats", &c.MissedHeartbeats, DefaultMissedHeartbeats},
			{"healthy_after", &c.HealthyAfter, DefaultHealthyAfter},
			{"unhealthy_after", &c.UnhealthyAfter, DefaultUnhealthyAfter},
			{"failure_threshold", &c.FailureThreshold, DefaultFailureThreshold},
			{"half_open_successes", &c.HalfOpenSuccesses, DefaultHalfOpenSuccesses},
			{"latency_window", &c.LatencyWindow, DefaultLatencyWindow},
			{"model_window", &c.ModelWindow, DefaultModelWindow},
			{"write_concurrency", &c.WriteConcurrency, DefaultWriteConcurrency},
		}
}

// staleAfter is how long a node may stay silent before it is unhealthy.
func (c *Config) staleAfter() time.Duration {
	return time.Duration(c.MissedHeartbeats) * c.HeartbeatInterval
}

// tick is the period of the service's single loop: fine enough that timer
// transitions (stale, half_open) land within a quarter interval.
func (c *Config) tick() time.Duration {
	t := min(c.HeartbeatInterval, c.ResetTimeout, c.CheckInterval, c.ProbeTimeout) / 4
	return max(t, minTick)
}

// minTick keeps the loop from spinning when every interval is tiny.
const minTick = 5 * time.Millisecond
