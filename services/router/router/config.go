// Package router is fedmesh's router (DESIGN §4, §6): it answers
// fed.infer.<capability> in queue group fed-router, scores the nodes it knows
// from its KV caches and hands each request to one node, retrying on others.
package router

import (
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Version is what `nats micro info fed-router` reports.
const Version = "0.1.0"

// Config tunes one router instance.
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// Region is the router's own region, used for locality when a request
	// has no Fed-Region. "" means unknown (every node scores neutral locality).
	Region string
	// Policy is the base policy: used until fed_config router.policy holds a
	// valid value, and again when that key is deleted. Zero value: record.DefaultPolicy().
	Policy record.Policy
	// MaxInFlight bounds the requests being placed at once (each runs on its
	// own goroutine); over it the router answers 429 at once. Default 4096.
	MaxInFlight int
	// InstanceID names this router in logs and micro metadata; default a new nuid.
	InstanceID string
	// OutstandingTTL bounds how long an accepted dispatch counts as
	// outstanding when its completion outcome never arrives, measured past
	// the request's deadline. Default 5 s.
	OutstandingTTL time.Duration
	// SweepInterval is how often forgotten outstanding dispatches are
	// swept. Default 1 s.
	SweepInterval time.Duration
	// StopTimeout bounds how long Stop waits for requests still being placed
	// before cancelling them. Default 5 s.
	StopTimeout time.Duration
	// Buckets are the options passed to buckets.Ensure.
	Buckets buckets.Options
	// Middleware run around every request after the built-in logging and
	// tenant-limit middleware.
	Middleware []Middleware
}

// DefaultConfig returns the DESIGN defaults.
func DefaultConfig() Config {
	return Config{
		Policy:         record.DefaultPolicy(),
		MaxInFlight:    4096,
		OutstandingTTL: 5 * time.Second,
		SweepInterval:  time.Second,
		StopTimeout:    5 * time.Second,
	}
}

func (c *Config) normalize() error {
	if c.Region != "" {
		if err := wire.ValidateID("region", c.Region); err != nil {
			return fmt.Errorf("router config: %w", err)
		}
	}
	if c.Policy.Strategy == "" && c.Policy.MaxCandidates == 0 && c.Policy.AckTimeoutMs == 0 {
		c.Policy = record.DefaultPolicy()
	}
	fillPolicyZeros(&c.Policy)
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("router config: policy: %w", err)
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("router config: max_in_flight must be >= 0, got %d", c.MaxInFlight)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4096
	}
	if c.OutstandingTTL <= 0 {
		c.OutstandingTTL = 5 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 5 * time.Second
	}
	return nil
}
