// Package nodeagent runs one node of the mesh: it registers the node's models
// with the catalog, serves dispatches on fed.node.<id>.infer by running its
// backend and streaming the answer to the client, and publishes heartbeats and
// outcome events for the health service (DESIGN §4).
package nodeagent

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// AgentVersion is reported in the catalog record and the micro service.
const AgentVersion = "0.1.0"

// Defaults of Config (DESIGN §2, §6 and this service's README). A zero
// field of Config means its default.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultMaxConcurrency    = 8
	DefaultCost              = 0.5
	DefaultRegisterTimeout   = 2 * time.Second
	DefaultRegisterRetry     = 500 * time.Millisecond
	// Replay buffer (fed.node.<id>.replay): per stream at most
	// DefaultReplayChunks messages and DefaultReplayBytes bytes, at most
	// DefaultReplayStreams finished streams, each kept DefaultReplayKeep
	// after its final.
	DefaultReplayChunks  = 4096
	DefaultReplayBytes   = 4 << 20
	DefaultReplayStreams = 256
	DefaultReplayKeep    = 30 * time.Second
	// DefaultMaxBlobBytes caps an out-of-band request body the node
	// fetches and an answer it stores in fed_blobs (DESIGN §3.7).
	DefaultMaxBlobBytes = blobs.DefaultMaxBytes
)

// Config of one node agent. Zero durations and MaxConcurrency mean their
// defaults. Cost and Clearance are the exceptions: their zero values (a
// free node, cleared for public data only) are settings in their own
// right, so only DefaultConfig gives DefaultCost and wire.DefaultPrivacy.
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

	HeartbeatInterval time.Duration // load report period
	DrainTimeout      time.Duration // Stop waits this long for in-flight requests
	// InstanceID tells this process apart from another claiming the same
	// node id; empty → a new random id.
	InstanceID string
	// RegisterTimeout bounds one register/deregister request; RegisterRetry
	// is the pause between attempts while no catalog answers.
	RegisterTimeout time.Duration
	RegisterRetry   time.Duration
	// GPUUtilization, when set, is sampled for every heartbeat (0..1).
	GPUUtilization func() float64

	// The replay buffer: the messages of each streamed request kept for
	// fed.node.<id>.replay. ReplayChunks and ReplayBytes bound one stream
	// (payload plus header bytes; the oldest messages go first),
	// ReplayStreams the finished streams kept (the oldest finished goes
	// first), ReplayKeep how long after its final a stream is kept.
	ReplayChunks  int
	ReplayBytes   int
	ReplayStreams int
	ReplayKeep    time.Duration

	// MaxBlobBytes caps the request bodies the node fetches from
	// fed_blobs (a larger one ends in a final 413) and the whole answers
	// it stores there; 0 → DefaultMaxBlobBytes.
	MaxBlobBytes int64

	// OutcomeWindow batches completed outcomes (outcomes.go, DESIGN §9.2):
	// 0 (the default) publishes each at once, but those of answers made at
	// once (acked done, DESIGN §4) in windows of AtOnceOutcomeWindow; > 0
	// sends the first after a quiet spell at once and the rest in windows of
	// this length (at most OutcomeBatchMax per message). Off by default: a
	// node killed inside a window loses the outcomes of finals it already
	// sent, and a router that takes its requests over then runs them again
	// (a second final).
	OutcomeWindow time.Duration

	// MetricsURL is the model server's Prometheus endpoint, scraped every
	// MetricsInterval for its own load, which heartbeats and acks carry
	// (DESIGN §9.1, §4); "" → no scrape. Metrics names its metrics:
	// MetricsVLLM (the default), MetricsSGLang, MetricsLlamaCpp, MetricsTGI.
	MetricsURL      string
	Metrics         string
	MetricsInterval time.Duration

	// Warmup: before registering, the agent streams one short request per
	// text model through the backend and, after its first heartbeat,
	// publishes each as a probe outcome, so routers know the node's TTFT
	// before its first client request (DESIGN §9.2, §6.7). Off in the Go API's zero value; a config file turns it
	// on for openai backends unless backend.warmup says otherwise.
	Warmup bool
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
		ReplayChunks:      DefaultReplayChunks,
		ReplayBytes:       DefaultReplayBytes,
		ReplayStreams:     DefaultReplayStreams,
		ReplayKeep:        DefaultReplayKeep,
		MaxBlobBytes:      DefaultMaxBlobBytes,
		Metrics:           DefaultMetrics,
		MetricsInterval:   DefaultMetricsInterval,
	}
}

// withDefaults fills every zero field that has a default.
func (c Config) withDefaults() Config {
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.MaxConcurrency = cmp.Or(c.MaxConcurrency, DefaultMaxConcurrency)
	c.RegisterTimeout = cmp.Or(c.RegisterTimeout, DefaultRegisterTimeout)
	c.RegisterRetry = cmp.Or(c.RegisterRetry, DefaultRegisterRetry)
	c.ReplayChunks = cmp.Or(c.ReplayChunks, DefaultReplayChunks)
	c.ReplayBytes = cmp.Or(c.ReplayBytes, DefaultReplayBytes)
	c.ReplayStreams = cmp.Or(c.ReplayStreams, DefaultReplayStreams)
	c.ReplayKeep = cmp.Or(c.ReplayKeep, DefaultReplayKeep)
	c.MaxBlobBytes = cmp.Or(c.MaxBlobBytes, DefaultMaxBlobBytes)
	c.Metrics = cmp.Or(c.Metrics, DefaultMetrics)
	c.MetricsInterval = cmp.Or(c.MetricsInterval, DefaultMetricsInterval)
	return c
}

// Validate reports the first invalid field by its name. Fields that have a
// default may be zero; negative values are errors.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("nodeagent config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	// The node's own fields follow the catalog's rules for its record, so
	// a config that starts is one the catalog accepts.
	full := c.withDefaults()
	rec := full.record(c.InstanceID)
	if err := rec.Validate(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat_interval", c.HeartbeatInterval}, {"drain_timeout", c.DrainTimeout},
		{"register_timeout", c.RegisterTimeout}, {"register_retry", c.RegisterRetry},
		{"replay_keep", c.ReplayKeep}, {"outcome_window", c.OutcomeWindow},
	} {
		if err := checkDuration(d.name, d.v); err != nil {
			return err
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"replay_chunks", c.ReplayChunks}, {"replay_bytes", c.ReplayBytes}, {"replay_streams", c.ReplayStreams},
	} {
		if n.v < 0 {
			return fmt.Errorf("%s must be >= 0, got %d", n.name, n.v)
		}
	}
	if c.MaxBlobBytes < 0 {
		return fmt.Errorf("max_blob_bytes must be >= 0, got %d", c.MaxBlobBytes)
	}
	if c.Backend == nil {
		return errors.New("backend must be set, got nil")
	}
	return checkServerMetrics(c.MetricsURL, c.Metrics, c.MetricsInterval)
}

// checkServerMetrics checks the scrape settings; zero values are the
// defaults (no URL: no scrape).
func checkServerMetrics(metricsURL, metrics string, interval time.Duration) error {
	if metricsURL != "" {
		if err := checkMetricsURL(metricsURL); err != nil {
			return err
		}
	}
	if metrics != "" {
		if err := checkMetrics(metrics); err != nil {
			return err
		}
	}
	return checkMetricsInterval(interval)
}

// checkDuration is shared with FileConfig.Check, so a YAML file and a Go
// config fail alike.
func checkDuration(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s must be >= 0, got %s", name, d)
	}
	return nil
}

// record is the node's catalog record.
func (c *Config) record(instance string) record.Node {
	return record.Node{
		NodeID: c.NodeID, Region: c.Region, Zone: c.Zone,
		Subject: c.Subjects.NodeInfer(c.NodeID), Models: c.Models,
		GPU: c.GPU, Cost: c.Cost, Clearance: c.Clearance, MaxConcurrency: c.MaxConcurrency,
		Labels: c.Labels, AgentVersion: AgentVersion, InstanceID: instance,
		Resumable: backend.IsResumable(c.Backend), Continues: backend.Continues(c.Backend), RegisteredAt: time.Now().UTC(),
	}
}
