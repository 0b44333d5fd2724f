package catalog

import (
	"cmp"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Version is what `nats micro info fed-catalog` reports.
const Version = "0.1.0"

// Defaults of Config (DESIGN §5). A zero field of Config means its default.
const (
	// DefaultNodeTTL is how long a node's record outlives its last heartbeat.
	DefaultNodeTTL = 10 * time.Second
	// DefaultTakeoverSilence is how long an agent instance must be silent
	// before another instance may register its node id: 3 missed 1 s
	// heartbeats, the silence after which health calls the node unhealthy
	// and routers take its requests over.
	DefaultTakeoverSilence = 3 * time.Second
	// DefaultWorkers bounds the register/deregister requests handled at once.
	DefaultWorkers = 16
	// SweepsPerTTL sets the default SweepInterval to NodeTTL/SweepsPerTTL, so
	// a silent node is gone at most a quarter TTL after it expired.
	SweepsPerTTL = 4
)

// jobsPerWorker sizes the queue in front of the worker pool: enough to absorb
// a burst of registrations, bounded so overload answers 503 instead of piling up.
const jobsPerWorker = 64

// Config tunes the catalog service. The zero value is DefaultConfig().
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// NodeTTL is how long a node's record outlives its last heartbeat; 0 means DefaultNodeTTL.
	NodeTTL time.Duration
	// TakeoverSilence is how long the registered instance must have been
	// silent before another instance may register the node id (a restarted
	// agent); 0 means DefaultTakeoverSilence, and it is never more than
	// NodeTTL. Keep it at least 3 heartbeat intervals: a live agent must
	// not lose its id between two heartbeats.
	TakeoverSilence time.Duration
	// SweepInterval is how often stale records are looked for; 0 means NodeTTL/SweepsPerTTL.
	SweepInterval time.Duration
	// Workers bounds the register/deregister requests handled at once
	// (they do KV I/O, so they run off the micro callback); 0 means DefaultWorkers.
	Workers int
	// Buckets are the options passed to buckets.Ensure.
	Buckets buckets.Options
}

// DefaultConfig returns the DESIGN defaults.
func DefaultConfig() Config {
	return Config{NodeTTL: DefaultNodeTTL, TakeoverSilence: DefaultTakeoverSilence, Workers: DefaultWorkers}
}

// Validate reports the first field that no default can stand for.
func (c Config) Validate() error {
	if c.NodeTTL < 0 {
		return fmt.Errorf("catalog config: node_ttl must be >= 0, got %s", c.NodeTTL)
	}
	if c.TakeoverSilence < 0 {
		return fmt.Errorf("catalog config: takeover_silence must be >= 0, got %s", c.TakeoverSilence)
	}
	if c.SweepInterval < 0 {
		return fmt.Errorf("catalog config: sweep_interval must be >= 0, got %s", c.SweepInterval)
	}
	if c.Workers < 0 {
		return fmt.Errorf("catalog config: workers must be >= 0, got %d", c.Workers)
	}
	return nil
}

// withDefaults fills every zero field with its default.
func (c Config) withDefaults() Config {
	c.NodeTTL = cmp.Or(c.NodeTTL, DefaultNodeTTL)
	c.TakeoverSilence = min(cmp.Or(c.TakeoverSilence, DefaultTakeoverSilence), c.NodeTTL)
	c.SweepInterval = cmp.Or(c.SweepInterval, c.NodeTTL/SweepsPerTTL)
	c.Workers = cmp.Or(c.Workers, DefaultWorkers)
	return c
}
