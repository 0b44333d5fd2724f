// Package benchrouting is `fedmesh bench-routing` (`make bench-routing`):
// every load-balancing strategy of the router on a realistic simulated
// fleet. Simulated vLLM servers of mixed speed (simserver profiles h100,
// a10, cpu) sit behind node agents on the OpenAI backend; three workloads
// (inference-perf's shared_prefix shape, multi-turn chat whose context
// grows, prompts that share nothing) arrive as Poisson processes at loads
// up to 90 % of the fleet's capacity; each strategy runs on a fresh mesh
// with cold server caches, the same arrivals and the same prompts. The
// report is a Markdown table per workload (TTFT, inter-token latency,
// output tokens/s, goodput, the servers' own prefix-cache hit rate,
// errors) and the targets, met or not.
//
// Servers run faster than real time (Options.TimeScale); every figure is
// in simulated time: real durations, measured at the client, times the
// scale.
package benchrouting

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// Defaults of a run; Options' zero fields take them.
const (
	// DefaultTimeScale runs the servers 20× faster than real time.
	DefaultTimeScale = 20.0
	// DefaultDuration is how long (simulated) requests arrive in a run of
	// a workload, load and strategy: at 90 % of the default fleet's
	// capacity about 1 000 requests, several times what it takes to warm
	// the prefix caches.
	DefaultDuration = 120 * time.Second
	// QuickDuration is the --quick variant's.
	QuickDuration  = 40 * time.Second
	DefaultSeed    = 1
	DefaultTimeout = 10 * time.Minute // per request, simulated (an OpenAI client's default)
	// DefaultGoodputTTFT is the goodput's bound: answered requests whose
	// first token came within it.
	DefaultGoodputTTFT = 2 * time.Second
)

// DefaultLoads are the load levels: shares of the fleet's capacity.
var DefaultLoads = []float64{0.3, 0.6, 0.9}

// QuickLoads are the --quick variant's: the highest only.
var QuickLoads = []float64{0.9}

// Strategies are the strategies a run compares: the plain balancers, the
// reference composite (least_latency) and the default (expected_ttft).
var Strategies = []string{record.StrategyRandom, record.StrategyRoundRobin, record.StrategyLeastConnections,
	record.StrategyPowerOfTwo, record.StrategyLeastLatency, record.StrategyExpectedTTFT}

// Options of a run.
type Options struct {
	Out     io.Writer // the report; default os.Stdout
	Log     io.Writer // a progress line per run; nil: none
	OutFile string    // also write the report here
	// Quick is the ≤ 90 s variant: the highest load only, fewer requests.
	Quick bool
	Seed  uint64
	// TimeScale is simulated seconds per real second (simserver --time-scale).
	TimeScale float64
	Fleet     []Server // default ParseFleet(DefaultFleet)
	// CacheFraction is the share of each server's KV pool its prefix
	// cache keeps (default DefaultCacheFraction; 1: the whole pool).
	CacheFraction float64
	// Strategies, Workloads and Loads to run (default all, all, DefaultLoads).
	Strategies []string
	Workloads  []string
	Loads      []float64
	// Duration is how long requests arrive in each run (simulated).
	Duration time.Duration
	// Repeat runs every cell this many times (seeds Seed, Seed+1, …) and
	// pools them; the tables then show each run's TTFT p90 range (default 1).
	Repeat int
	// Shapes of the workloads; zero: the defaults.
	SharedPrefix SharedPrefix
	MultiTurn    MultiTurn
	NoSharing    NoSharing
	// GoodputTTFT and Timeout are simulated durations.
	GoodputTTFT time.Duration
	Timeout     time.Duration
	// Trace, when set, gets a CSV line per request (trace.go): where the
	// router sent it, what it predicted and what the client measured.
	Trace io.Writer
}

func (o *Options) defaults() error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Seed == 0 {
		o.Seed = DefaultSeed
	}
	if o.TimeScale == 0 {
		o.TimeScale = DefaultTimeScale
	}
	if len(o.Fleet) == 0 {
		f, err := ParseFleet(DefaultFleet)
		if err != nil {
			return err
		}
		o.Fleet = f
	}
	if o.CacheFraction == 0 {
		o.CacheFraction = DefaultCacheFraction
	}
	if len(o.Strategies) == 0 {
		o.Strategies = Strategies
	}
	if len(o.Workloads) == 0 {
		o.Workloads = Workloads
	}
	if len(o.Loads) == 0 {
		o.Loads = DefaultLoads
		if o.Quick {
			o.Loads = QuickLoads
		}
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
		if o.Quick {
			o.Duration = QuickDuration
		}
	}
	if o.Repeat == 0 {
		o.Repeat = 1
	}
	if o.GoodputTTFT == 0 {
		o.GoodputTTFT = DefaultGoodputTTFT
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	o.SharedPrefix = o.SharedPrefix.withDefaults()
	o.MultiTurn = o.MultiTurn.withDefaults()
	o.NoSharing = o.NoSharing.withDefaults()
	return o.validate()
}

func (o *Options) validate() error {
	switch {
	case !(o.TimeScale > 0) || o.TimeScale > 1000:
		return fmt.Errorf("time scale %v: want > 0 and <= 1000", o.TimeScale)
	case !(o.CacheFraction > 0) || o.CacheFraction > 1:
		return fmt.Errorf("cache fraction %v: want > 0 and <= 1", o.CacheFraction)
	case o.Duration < 0:
		return fmt.Errorf("duration %v: want > 0", o.Duration)
	case o.Repeat < 1 || o.Repeat > 100:
		return fmt.Errorf("repeat %d: want 1–100", o.Repeat)
	case o.GoodputTTFT < 0 || o.Timeout < 0:
		return fmt.Errorf("goodput TTFT %v, timeout %v: want >= 0", o.GoodputTTFT, o.Timeout)
	}
	for _, s := range o.Strategies {
		if !slices.Contains(record.Strategies, s) {
			return fmt.Errorf("strategy %q: want one of %s", s, strings.Join(record.Strategies, ", "))
		}
	}
	for _, w := range o.Workloads {
		if !slices.Contains(Workloads, w) {
			return fmt.Errorf("workload %q: want one of %s", w, strings.Join(Workloads, ", "))
		}
	}
	for _, l := range o.Loads {
		if !(l > 0) || l > 2 {
			return fmt.Errorf("load %v: want a share of capacity in (0, 2]", l)
		}
	}
	for _, err := range []error{o.SharedPrefix.validate(), o.MultiTurn.validate(), o.NoSharing.validate()} {
		if err != nil {
			return err
		}
	}
	return nil
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

func (o *Options) workload(name string) workload {
	switch name {
	case WorkloadSharedPrefix:
		return o.SharedPrefix
	case WorkloadMultiTurn:
		return o.MultiTurn
	}
	return o.NoSharing
}

// Report is a finished run: every cell, the targets, the wall time.
type Report struct {
	Targets []Target
	Wall    time.Duration
	cells   []cellResult
	o       *Options
}

// Target is one of the targets and whether the run met it.
type Target struct {
	Name, Want, Got string
	Met             bool
	// Judged is false when the run lacks the cells to judge it.
	Judged bool
}

// Met says whether every judged target was met.
func (r *Report) Met() bool {
	for _, t := range r.Targets {
		if t.Judged && !t.Met {
			return false
		}
	}
	return true
}

// Run runs every workload at every load under every strategy, prints the
// report to o.Out (and o.OutFile) and returns it.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("bench-routing: %w", err)
	}
	t0 := time.Now()
	rep := &Report{o: &o}
	if o.Trace != nil {
		if _, err := io.WriteString(o.Trace, traceHeader); err != nil {
			return nil, fmt.Errorf("bench-routing: trace: %w", err)
		}
	}
	for wi, name := range o.Workloads {
		w := o.workload(name)
		capa := fleetCapacity(o.Fleet, w)
		for li, load := range o.Loads {
			// the same arrivals and prompts for every strategy
			seed := o.Seed*1_000_003 + uint64(wi)*100_003 + uint64(li)*1009
			for _, strategy := range o.Strategies {
				c, err := runCell(ctx, &o, w, load, load*capa, strategy, seed)
				if err != nil {
					return nil, fmt.Errorf("bench-routing: %w", err)
				}
				o.logf("%-13s %3.0f%% %-17s %4d req  TTFT p90 %-8s%s hit %-5s errors %d  (%.1fs)", name, 100*load, strategy,
					c.requests, fmtSeconds(c.ttft[1]), fmtRange(c.runP90), fmtShare(c.hit, c.hitKnown), c.errors, c.wall.Seconds())
				rep.cells = append(rep.cells, c)
			}
		}
	}
	rep.Wall = time.Since(t0)
	rep.Targets = rep.judge()
	var b strings.Builder
	rep.write(&b)
	if _, err := io.WriteString(o.Out, b.String()); err != nil {
		return rep, err
	}
	if o.OutFile != "" {
		if err := os.WriteFile(o.OutFile, []byte(b.String()), 0o644); err != nil {
			return rep, fmt.Errorf("bench-routing: write %s: %w", o.OutFile, err)
		}
	}
	return rep, nil
}

func machine() string {
	return fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}
