// Package chaos is `fedmesh chaos`: the fault run of issue 12 against a real
// mesh of separate processes (3 nats-servers with R3 buckets, 2 catalogs, 2
// health, 2 routers, synthetic node agents), loaded by closed-loop clients
// that check every answer on the wire, token by token, as a third-party
// client would (raw nats.go, not the SDK). It kills, drains, stops and
// restarts parts one after the other, then sends malformed input straight
// on NATS, and prints Markdown tables of what the clients saw.
package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Defaults of a full run (the fault run); zero fields of Options
// take them. Short variants are in ShortOptions.
const (
	// DefaultDuration is the whole load: DefaultCalm without faults after
	// the warm-up, then 120 s with the faults and the bad input.
	DefaultDuration       = 135 * time.Second
	DefaultClients        = 24
	DefaultNodes          = 6
	DefaultBinDir         = "bin"
	DefaultSeed           = 1
	DefaultClientTimeout  = 10 * time.Second
	DefaultMaxConcurrency = 8
	DefaultMinTokens      = 20
	DefaultMaxTokens      = 100
	DefaultMinTokenDelay  = 5 * time.Millisecond
	DefaultMaxTokenDelay  = 20 * time.Millisecond
	DefaultRestartDelay   = 3 * time.Second  // killed node agents and routers come back after this
	DefaultServerDown     = 15 * time.Second // the killed meta leader comes back after this
	DefaultStopFor        = 10 * time.Second // SIGSTOP … SIGCONT
	DefaultWarmup         = 5 * time.Second
	DefaultCalm           = 15 * time.Second // fault-free load after the warm-up, before the first fault
	DefaultLinger         = 3 * time.Second  // late messages are awaited this long after the load
)

// Options of a chaos run.
type Options struct {
	Out            io.Writer // tables; default os.Stdout
	Log            io.Writer // progress; default os.Stderr
	OutFile        string    // also write the tables here
	Duration       time.Duration
	Clients        int
	Nodes          int
	BinDir         string
	Seed           uint64
	Short          bool // the ≤ 60 s variant for make test
	Strict         bool // fail when the targets are missed
	Keep           bool // keep the work dir (logs, configs, stores)
	ClientTimeout  time.Duration
	MaxConcurrency int
	MinTokens      int
	MaxTokens      int
	MinTokenDelay  time.Duration
	MaxTokenDelay  time.Duration
	RestartDelay   time.Duration
	ServerDown     time.Duration
	StopFor        time.Duration
	Warmup         time.Duration
	// Calm is load without faults after the warm-up: every request that
	// ends before the first fault must be a strict success and none a 503
	// (the "without faults 100 % and 0 503s with spare capacity";
	// the clients are fewer than the nodes' slots).
	Calm   time.Duration
	Linger time.Duration
	// NodeTTL is passed to the catalogs as --node-ttl when set (0: their
	// default, 10 s). The short run sets it below StopFor so a stopped node
	// still outlives its record, as in the full run.
	NodeTTL time.Duration
	// ResetTimeout is passed to health as --reset-timeout when set (0: its
	// default, 30 s). The short run sets it so that a circuit the SIGSTOP
	// phase opened (five ack timeouts or losses of the stopped node in a
	// row: correct, but a matter of how many requests it happened to hold)
	// is half_open again, and closed by the load, before the check after
	// the bad input; with 30 s that check passed or failed on the timing of
	// the fifth failure.
	ResetTimeout time.Duration
	// Faults runs only these faults (by name) when set.
	Faults []string
	// SkipInput skips the malformed inputs.
	SkipInput bool

	workDir string
}

// ShortOptions are the ≤ 60 s variant: 4 nodes, 10 clients, a 3 s fault-free phase after the warm-up, shorter holds
// and recovery, every fault, the bad input.
func ShortOptions() Options {
	return Options{
		Duration: 36 * time.Second, Clients: 10, Nodes: 4, Short: true, Calm: 3 * time.Second,
		RestartDelay: 2 * time.Second, ServerDown: 5 * time.Second, StopFor: 5 * time.Second,
		NodeTTL: 4 * time.Second, ResetTimeout: 8 * time.Second, Warmup: 3 * time.Second, Linger: 1500 * time.Millisecond,
		MinTokens: 20, MaxTokens: 60,
	}
}

// withDefaults fills zero fields; in short mode from ShortOptions first.
func (o Options) withDefaults() Options {
	if o.Short {
		s := ShortOptions()
		o.Duration = pick(o.Duration, s.Duration)
		o.Clients = pick(o.Clients, s.Clients)
		o.Nodes = pick(o.Nodes, s.Nodes)
		o.RestartDelay = pick(o.RestartDelay, s.RestartDelay)
		o.ServerDown = pick(o.ServerDown, s.ServerDown)
		o.StopFor = pick(o.StopFor, s.StopFor)
		o.NodeTTL = pick(o.NodeTTL, s.NodeTTL)
		o.ResetTimeout = pick(o.ResetTimeout, s.ResetTimeout)
		o.Warmup = pick(o.Warmup, s.Warmup)
		o.Calm = pick(o.Calm, s.Calm)
		o.Linger = pick(o.Linger, s.Linger)
		o.MinTokens = pick(o.MinTokens, s.MinTokens)
		o.MaxTokens = pick(o.MaxTokens, s.MaxTokens)
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	o.Duration = pick(o.Duration, DefaultDuration)
	o.Clients = pick(o.Clients, DefaultClients)
	o.Nodes = pick(o.Nodes, DefaultNodes)
	o.BinDir = pick(o.BinDir, DefaultBinDir)
	o.Seed = pick(o.Seed, DefaultSeed)
	o.ClientTimeout = pick(o.ClientTimeout, DefaultClientTimeout)
	o.MaxConcurrency = pick(o.MaxConcurrency, DefaultMaxConcurrency)
	o.MinTokens = pick(o.MinTokens, DefaultMinTokens)
	o.MaxTokens = pick(o.MaxTokens, DefaultMaxTokens)
	o.MinTokenDelay = pick(o.MinTokenDelay, DefaultMinTokenDelay)
	o.MaxTokenDelay = pick(o.MaxTokenDelay, DefaultMaxTokenDelay)
	o.RestartDelay = pick(o.RestartDelay, DefaultRestartDelay)
	o.ServerDown = pick(o.ServerDown, DefaultServerDown)
	o.StopFor = pick(o.StopFor, DefaultStopFor)
	o.Warmup = pick(o.Warmup, DefaultWarmup)
	o.Calm = pick(o.Calm, DefaultCalm)
	o.Linger = pick(o.Linger, DefaultLinger)
	return o
}

func pick[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Validate names the first bad field.
func (o Options) Validate() error {
	switch {
	case o.Duration < 10*time.Second:
		return fmt.Errorf("duration must be at least 10s, got %v", o.Duration)
	case o.Clients < 1:
		return fmt.Errorf("clients must be at least 1, got %d", o.Clients)
	case o.Nodes < 3:
		return fmt.Errorf("nodes must be at least 3 (three faults hit a node each), got %d", o.Nodes)
	case o.MinTokens < 1 || o.MaxTokens < o.MinTokens:
		return fmt.Errorf("tokens: need 1 <= min (%d) <= max (%d)", o.MinTokens, o.MaxTokens)
	case o.MinTokenDelay < 0 || o.MaxTokenDelay < o.MinTokenDelay:
		return fmt.Errorf("token delay: need 0 <= min (%v) <= max (%v)", o.MinTokenDelay, o.MaxTokenDelay)
	case o.ClientTimeout < time.Second || o.ClientTimeout > time.Hour:
		return fmt.Errorf("client timeout must be in [1s, 1h], got %v", o.ClientTimeout)
	case o.MaxConcurrency < 1:
		return fmt.Errorf("max concurrency must be at least 1, got %d", o.MaxConcurrency)
	case o.RestartDelay < 0 || o.ServerDown < 0 || o.StopFor < 0 || o.Warmup < 0 || o.Calm < 0 || o.Linger < 0 || o.NodeTTL < 0 || o.ResetTimeout < 0:
		return errors.New("restart delay, server down, stop for, warmup, calm, linger and node ttl must not be negative")
	}
	for _, f := range o.Faults {
		if faultByName(f) == nil {
			return fmt.Errorf("faults: unknown fault %q", f)
		}
	}
	return nil
}
