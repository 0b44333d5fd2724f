// Package router is fedmesh's router (DESIGN §4, §6): it answers
// fed.infer.<capability> in queue group fed-router, scores the nodes it knows
// from its KV caches and hands each request to one node, retrying on others.
package router

import (
	"cmp"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Version is what `nats micro info fed-router` reports.
const Version = "0.1.0"

// Defaults of Config (DESIGN §4). A zero field of Config means its default.
const (
	// DefaultMaxInFlight bounds the requests being placed at once.
	DefaultMaxInFlight = 4096
	// DefaultOutstandingTTL is how long past its deadline an accepted
	// dispatch without a completion outcome still counts as load.
	DefaultOutstandingTTL = 5 * time.Second
	// DefaultSweepInterval is how often such dispatches are swept.
	DefaultSweepInterval = time.Second
	// DefaultStopTimeout is how long Stop waits for requests being placed.
	DefaultStopTimeout = 5 * time.Second
	// DefaultMaxQueue bounds the requests waiting for a free slot when every
	// eligible node is full.
	DefaultMaxQueue = 4096
	// DefaultLostSilence: a fed_health record that turns a node unhealthy
	// with its last_heartbeat at least this old says the node went silent
	// (lost), not that it failed requests. Health writes that record after
	// MissedHeartbeats (3) × HeartbeatInterval (1 s) of silence; a node
	// unhealthy for failures still heartbeats, so its record's
	// last_heartbeat is under one interval old.
	DefaultLostSilence = 2 * time.Second
)

// Config tunes one router instance. The zero value is DefaultConfig().
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// Region is the router's own region, used for locality when a request
	// has no Fed-Region. "" means unknown (every node scores neutral locality).
	Region string
	// Policy is the base policy: used until fed_config router.policy holds a
	// valid value, and again when that key is deleted. Zero value: record.DefaultPolicy().
	Policy record.Policy
	// MaxInFlight bounds the requests being placed at once (queued ones and
	// those in their finals grace included); over it the router answers 429
	// at once. 0 means DefaultMaxInFlight.
	MaxInFlight int
	// InstanceID names this router in micro metadata; default a new nuid.
	InstanceID string
	// OutstandingTTL bounds how long an accepted dispatch counts as
	// outstanding when its completion outcome never arrives, measured past
	// the request's deadline. 0 means DefaultOutstandingTTL.
	OutstandingTTL time.Duration
	// SweepInterval is how often forgotten outstanding dispatches are
	// swept. 0 means DefaultSweepInterval.
	SweepInterval time.Duration
	// StopTimeout bounds how long Stop waits for requests still being placed
	// before cancelling them. 0 means DefaultStopTimeout.
	StopTimeout time.Duration
	// MaxQueue bounds the requests waiting at this router because every
	// eligible node is full; over it a request is answered 429 at once.
	// 0 means DefaultMaxQueue.
	MaxQueue    int
	LostSilence time.Duration
	// PrefixIndexBlocks bounds one generation of the prefix index
	// (prefix.go; two are kept). 0 means DefaultPrefixIndexBlocks.
	PrefixIndexBlocks int
	// Buckets are the options passed to buckets.Ensure.
	Buckets buckets.Options
	// Middleware run around every request after the built-in logging and
	// tenant-limit middleware.
	Middleware []Middleware
}

// DefaultConfig returns the DESIGN defaults.
func DefaultConfig() Config {
	return Config{
		Policy:            record.DefaultPolicy(),
		MaxInFlight:       DefaultMaxInFlight,
		OutstandingTTL:    DefaultOutstandingTTL,
		SweepInterval:     DefaultSweepInterval,
		StopTimeout:       DefaultStopTimeout,
		MaxQueue:          DefaultMaxQueue,
		LostSilence:       DefaultLostSilence,
		PrefixIndexBlocks: DefaultPrefixIndexBlocks,
	}
}

// Validate reports the first field that no default can stand for.
func (c Config) Validate() error {
	if c.Region != "" {
		if err := wire.ValidateID("region", c.Region); err != nil {
			return fmt.Errorf("router config: %w", err)
		}
	}
	policy := basePolicy(c.Policy)
	if err := policy.Validate(); err != nil {
		return fmt.Errorf("router config: policy: %w", err)
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("router config: max_in_flight must be >= 0, got %d", c.MaxInFlight)
	}
	if c.OutstandingTTL < 0 {
		return fmt.Errorf("router config: outstanding_ttl must be >= 0, got %s", c.OutstandingTTL)
	}
	if c.SweepInterval < 0 {
		return fmt.Errorf("router config: sweep_interval must be >= 0, got %s", c.SweepInterval)
	}
	if c.StopTimeout < 0 {
		return fmt.Errorf("router config: stop_timeout must be >= 0, got %s", c.StopTimeout)
	}
	if c.MaxQueue < 0 {
		return fmt.Errorf("router config: max_queue must be >= 0, got %d", c.MaxQueue)
	}
	if c.LostSilence < 0 {
		return fmt.Errorf("router config: lost_silence must be >= 0, got %s", c.LostSilence)
	}
	if c.PrefixIndexBlocks < 0 {
		return fmt.Errorf("router config: prefix_index_blocks must be >= 0, got %d", c.PrefixIndexBlocks)
	}
	return nil
}

// withDefaults fills every zero field with its default.
func (c Config) withDefaults() Config {
	c.Policy = basePolicy(c.Policy)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.OutstandingTTL = cmp.Or(c.OutstandingTTL, DefaultOutstandingTTL)
	c.SweepInterval = cmp.Or(c.SweepInterval, DefaultSweepInterval)
	c.StopTimeout = cmp.Or(c.StopTimeout, DefaultStopTimeout)
	c.MaxQueue = cmp.Or(c.MaxQueue, DefaultMaxQueue)
	c.LostSilence = cmp.Or(c.LostSilence, DefaultLostSilence)
	c.PrefixIndexBlocks = cmp.Or(c.PrefixIndexBlocks, DefaultPrefixIndexBlocks)
	return c
}

// basePolicy is p with record.Policy's defaults for what p leaves out: a
// policy without strategy, max_candidates and ack timeout was never set at
// all and is the default one.
func basePolicy(p record.Policy) record.Policy {
	if p.Strategy == "" && p.MaxCandidates == 0 && p.AckTimeoutMs == 0 {
		p = record.DefaultPolicy()
	}
	fillPolicyZeros(&p)
	return p
}
