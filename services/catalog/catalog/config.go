package catalog

import (
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Version is what `nats micro info fed-catalog` reports.
const Version = "0.1.0"

// Config tunes the catalog service.
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// NodeTTL is how long a node's record outlives its last heartbeat (DESIGN §5, default 10 s).
	NodeTTL time.Duration
	// SweepInterval is how often stale records are looked for; 0 means NodeTTL/4.
	SweepInterval time.Duration
	// Workers bounds the register/deregister requests handled at once
	// (they do KV I/O, so they run off the micro callback). 0 means 16.
	Workers int
	// Buckets are the options passed to buckets.Ensure.
	Buckets buckets.Options
}

// DefaultConfig returns the DESIGN defaults.
func DefaultConfig() Config {
	return Config{NodeTTL: 10 * time.Second, Workers: 16}
}

func (c *Config) normalize() error {
	if c.NodeTTL <= 0 {
		return fmt.Errorf("catalog config: node_ttl must be > 0, got %s", c.NodeTTL)
	}
	if c.SweepInterval < 0 {
		return fmt.Errorf("catalog config: sweep_interval must be >= 0, got %s", c.SweepInterval)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = c.NodeTTL / 4
	}
	if c.Workers < 0 {
		return fmt.Errorf("catalog config: workers must be >= 0, got %d", c.Workers)
	}
	if c.Workers == 0 {
		c.Workers = 16
	}
	return nil
}
