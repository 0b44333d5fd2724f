// Package nodeagent runs one node of the mesh: it registers the node's models
// with the catalog, serves dispatches on fed.node.<id>.infer by running its
// backend and streaming the answer to the client, and publishes heartbeats and
// outcome events for the health service (DESIGN §4).
package nodeagent

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// AgentVersion is reported in the catalog record and the micro service.
const AgentVersion = "0.1.0"

// Defaults (DESIGN §2, §6 and this service's README).
const (
	DefaultHeartbeatInterval = time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultMaxConcurrency    = 8
	DefaultCost              = 0.5
	DefaultRegisterTimeout   = 2 * time.Second
	DefaultRegisterRetry     = 500 * time.Millisecond
)

// Config of one node agent.
type Config struct {
	Subjects       subject.Space // zero: prefix "fed"
	NodeID         string
	Region         string
	Zone           string
	GPU            bool
	Cost           float64      // relative, [0,1]
	Clearance      wire.Privacy // highest privacy level it may process
	MaxConcurrency int          // requests in flight before it answers busy
	Models         []record.Model
	Labels         map[string]string
	Backend        backend.Backend

	HeartbeatInterval time.Duration // load report period (1 s)
	DrainTimeout      time.Duration // Stop waits this long for in-flight requests (30 s)
	// InstanceID tells this process apart from another claiming the same
	// node id; empty → a new random id.
	InstanceID string
	// RegisterTimeout bounds one register/deregister request; RegisterRetry
	// is the pause between attempts while no catalog answers.
	RegisterTimeout time.Duration
	RegisterRetry   time.Duration
	// GPUUtilization, when set, is sampled for every heartbeat (0..1).
	GPUUtilization func() float64
}

// DefaultConfig returns the defaults; NodeID, Region, Models and Backend
// still have to be set.
func DefaultConfig() Config {
	return Config{
		Subjects:          subject.Default,
		Cost:              DefaultCost,
		Clearance:         wire.DefaultPrivacy,
		MaxConcurrency:    DefaultMaxConcurrency,
		HeartbeatInterval: DefaultHeartbeatInterval,
		DrainTimeout:      DefaultDrainTimeout,
		RegisterTimeout:   DefaultRegisterTimeout,
		RegisterRetry:     DefaultRegisterRetry,
	}
}

// withDefaults fills zero durations and limits, so a Config built by hand
// (not from DefaultConfig) still works.
func (c Config) withDefaults() Config {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.RegisterTimeout <= 0 {
		c.RegisterTimeout = DefaultRegisterTimeout
	}
	if c.RegisterRetry <= 0 {
		c.RegisterRetry = DefaultRegisterRetry
	}
	return c
}

// Validate checks the config; the error names the bad field.
func (c Config) Validate() error {
	var errs []error
	if err := wire.ValidateID("node_id", c.NodeID); err != nil {
		errs = append(errs, err)
	}
	if err := wire.ValidateID("region", c.Region); err != nil {
		errs = append(errs, err)
	}
	if c.Zone != "" {
		if err := wire.ValidateID("zone", c.Zone); err != nil {
			errs = append(errs, err)
		}
	}
	if math.IsNaN(c.Cost) || c.Cost < 0 || c.Cost > 1 {
		errs = append(errs, fmt.Errorf("cost %v is outside [0,1]", c.Cost))
	}
	if c.Clearance > wire.PrivacyRestricted {
		errs = append(errs, fmt.Errorf("clearance %d is not a privacy level", c.Clearance))
	}
	if c.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("max_concurrency %d is negative", c.MaxConcurrency))
	}
	if len(c.Models) == 0 {
		errs = append(errs, errors.New("models: the node serves no model"))
	}
	seen := map[string]bool{}
	for i, m := range c.Models {
		if err := wire.ValidateID("model_id", m.ModelID); err != nil {
			errs = append(errs, fmt.Errorf("models[%d]: %w", i, err))
		} else if seen[m.ModelID] {
			errs = append(errs, fmt.Errorf("models[%d]: model_id %q is listed twice", i, m.ModelID))
		}
		seen[m.ModelID] = true
		if len(m.Capabilities) == 0 {
			errs = append(errs, fmt.Errorf("models[%d] (%s): capabilities is empty", i, m.ModelID))
		}
		for _, cp := range m.Capabilities {
			if err := wire.ValidateCapability(cp); err != nil {
				errs = append(errs, fmt.Errorf("models[%d] (%s): capabilities: %w", i, m.ModelID, err))
			}
		}
	}
	if c.Backend == nil {
		errs = append(errs, errors.New("backend is not set"))
	}
	if c.InstanceID != "" && len(c.InstanceID) > 256 {
		errs = append(errs, errors.New("instance_id is longer than 256 bytes"))
	}
	return errors.Join(errs...)
}

// record is the node's catalog record.
func (c *Config) record(instance string) record.Node {
	return record.Node{
		NodeID: c.NodeID, Region: c.Region, Zone: c.Zone,
		Subject: c.Subjects.NodeInfer(c.NodeID), Models: c.Models,
		GPU: c.GPU, Cost: c.Cost, Clearance: c.Clearance, MaxConcurrency: c.MaxConcurrency,
		Labels: c.Labels, AgentVersion: AgentVersion, InstanceID: instance,
		RegisteredAt: time.Now().UTC(),
	}
}
