package benchrouting

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// columns of the per-workload tables, in order: the goodput's bound and
// the fleet's profiles name two of them.
func columns(goodBound time.Duration, profiles []string) []string {
	return []string{"load", "strategy", "req/s", "TTFT p50", "TTFT p90", "TTFT p99", "ITL p50", "ITL p90",
		"output tok/s", "goodput (TTFT ≤ " + fmtSeconds(goodBound.Seconds()) + ")", "prefix hit rate", "errors",
		"share " + strings.Join(profiles, "/")}
}

// Target thresholds (issue 14, item 6).
const (
	targetTTFTRatio = 10   // default's TTFT p90 ≤ round_robin's / 10
	targetHitRatio  = 3    // default's hit rate ≥ 3 × round_robin's
	targetTolerance = 0.05 // no_sharing: within 5 % of power_of_two
)

func (r *Report) write(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "## fedmesh bench-routing\n\n")
	fmt.Fprintf(w, "Machine: %s. Wall time %s. Seed %d; in each run requests arrive for %s (Poisson).", machine(), r.Wall.Round(time.Second), o.Seed, o.Duration)
	if o.Repeat > 1 {
		fmt.Fprintf(w, " Every cell ran %d times (seeds %d…%d) and pools them; TTFT p90 shows the runs' range.", o.Repeat, o.Seed, o.Seed+uint64(o.Repeat)-1)
	}
	fmt.Fprintf(w, "\n\n")
	fmt.Fprintf(w, "The servers run %g× faster than real time; every time and rate below is simulated (what the client measured, × %g, so the mesh's own overhead counts %g× too). "+
		"Each run is a fresh mesh (embedded nats-server, catalog, health, one router with the strategy, a node agent per server on the OpenAI backend scraping the server's load) and fresh servers with cold prefix caches; "+
		"every strategy gets the same arrivals and prompts. The control plane runs on the simulated clock as far as it can be set: heartbeats (which pace health's fed_health writes) and health's degraded threshold (1 s) are divided by the scale, heartbeats at least %s apart. "+
		"The router runs its defaults but the strategy; its latency score's 5 s ceiling is a constant, so least_latency and power_of_two see every latency %g× smaller than at 1×.\n\n", o.TimeScale, o.TimeScale, o.TimeScale, minHeartbeat, o.TimeScale)
	var lag time.Duration
	for _, c := range r.cells {
		lag = max(lag, c.lag)
	}
	fmt.Fprintf(w, "Arrivals were sent at most %s (real) after their time. ITL is each answer's mean gap between tokens, (last − first) ÷ (tokens − 1), p50/p90 over answers: "+
		"at this time scale single gaps show the event loops' millisecond bursts, not the servers' steps.\n\n", lag.Round(time.Millisecond))
	r.writeFleet(w)
	for _, name := range o.Workloads {
		r.writeWorkload(w, name)
	}
	r.writePlacement(w)
	r.writeTargets(w)
}

func (r *Report) writeFleet(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "### Fleet\n\n")
	fmt.Fprintf(w, "Capacity is what a server sustains with every prompt prefilled (no prefix-cache hit): prefill ÷ prefill rate + answer × (per-sequence step + base step ÷ batch), the batch bounded by max_concurrency, max_num_seqs and the KV pool. Load levels are shares of the fleet's sum.\n\n")
	fmt.Fprintf(w, "Prefix caches keep %.3g of each server's KV pool (the workload is scaled down from a production shared-prefix run by about as much; with whole pools every server would hold every system prompt).\n\n", o.CacheFraction)
	fmt.Fprintf(w, "| servers | profile | node max_concurrency | prefix cache kept (tokens) |")
	for _, name := range o.Workloads {
		fmt.Fprintf(w, " capacity %s (req/s) |", name)
	}
	fmt.Fprintf(w, "\n|---|---|---|---|%s\n", strings.Repeat("---|", len(o.Workloads)))
	counts := map[string]int{}
	for _, s := range o.Fleet {
		counts[s.Profile.Name]++
	}
	for _, p := range profileNames(o.Fleet) {
		i := slices.IndexFunc(o.Fleet, func(s Server) bool { return s.Profile.Name == p })
		s := o.Fleet[i]
		fmt.Fprintf(w, "| %d | %s | %d | %d |", counts[p], p, s.MaxConcurrency, cacheBlocks(s.Profile, o.CacheFraction)*s.Profile.BlockSize)
		for _, name := range o.Workloads {
			wl := o.workload(name)
			fmt.Fprintf(w, " %.2f |", capacity(s, wl.meanPrompt(), float64(wl.output())))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "| %d | **fleet** | | |", len(o.Fleet))
	for _, name := range o.Workloads {
		fmt.Fprintf(w, " **%.1f** |", fleetCapacity(o.Fleet, o.workload(name)))
	}
	fmt.Fprintf(w, "\n\nWorkloads:\n\n")
	for _, name := range o.Workloads {
		fmt.Fprintf(w, "- `%s`: %s.\n", name, o.workload(name).describe())
	}
	fmt.Fprintln(w)
}

func (r *Report) writeWorkload(w io.Writer, name string) {
	fmt.Fprintf(w, "### %s (capacity %.1f req/s)\n\n", name, fleetCapacity(r.o.Fleet, r.o.workload(name)))
	profiles := profileNames(r.o.Fleet)
	cols := columns(r.o.GoodputTTFT, profiles)
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, c := range r.cells {
		if c.workload != name {
			continue
		}
		shares := make([]string, len(profiles))
		for i, p := range profiles {
			shares[i] = fmt.Sprintf("%.0f", 100*c.share[p])
		}
		fmt.Fprintf(w, "| %.0f%% | %s | %.2f | %s | %s | %s | %s | %s | %.0f | %.2f/s (%.0f%%) | %s | %s | %s |\n",
			100*c.load, strategyName(c.strategy), c.rate, fmtSeconds(c.ttft[0]), fmtSeconds(c.ttft[1])+fmtRange(c.runP90), fmtSeconds(c.ttft[2]),
			fmtSeconds(c.itl[0]), fmtSeconds(c.itl[1]), c.tokensPerSec, c.goodput, 100*c.goodShare,
			fmtShare(c.hit, c.hitKnown), fmtErrors(c.summary), strings.Join(shares, "/")+" %")
	}
	fmt.Fprintln(w)
}

// writePlacement shows, at the highest load, where each strategy sent
// requests and how each kind of server fared: what to look at when a
// strategy misses.
func (r *Report) writePlacement(w io.Writer) {
	top := r.topLoad()
	profiles := profileNames(r.o.Fleet)
	fmt.Fprintf(w, "### Where requests went at %.0f%% load\n\n", 100*top)
	fmt.Fprintf(w, "Per kind of server: share of the answered requests · TTFT p90 there · the servers' prefix-cache hit rate. "+
		"Servers per prefix: how many servers got requests of the same shared_prefix group or the same conversation, on average (1 is perfect affinity).\n\n")
	fmt.Fprintf(w, "| workload | strategy | servers per prefix | %s |\n|---|---|---|%s\n", strings.Join(profiles, " | "), strings.Repeat("---|", len(profiles)))
	for _, c := range r.cells {
		if c.load != top {
			continue
		}
		sp := "–"
		if c.spread > 0 {
			sp = fmt.Sprintf("%.1f", c.spread)
		}
		fmt.Fprintf(w, "| %s | %s | %s |", c.workload, strategyName(c.strategy), sp)
		for _, p := range profiles {
			f := c.byProfile[p]
			if f.requests == 0 {
				fmt.Fprintf(w, " – · hit %s |", fmtShare(f.hit, f.hitKnown))
				continue
			}
			fmt.Fprintf(w, " %.0f%% · %s · hit %s |", 100*c.share[p], fmtSeconds(f.ttftP90), fmtShare(f.hit, f.hitKnown))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

func (r *Report) writeTargets(w io.Writer) {
	fmt.Fprintf(w, "### Targets\n\n| target | want | got | met |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		met := "**missed**"
		switch {
		case !t.Judged:
			met = "not run"
		case t.Met:
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, met)
	}
	fmt.Fprintln(w)
}

func (r *Report) topLoad() float64 {
	if len(r.o.Loads) == 0 {
		return 0
	}
	return slices.Max(r.o.Loads)
}

func (r *Report) cell(workload string, load float64, strategy string) *cellResult {
	for i := range r.cells {
		c := &r.cells[i]
		if c.workload == workload && c.load == load && c.strategy == strategy {
			return c
		}
	}
	return nil
}

// judge checks the targets on the cells the run has.
func (r *Report) judge() []Target {
	top := r.topLoad()
	def, rr, p2 := record.StrategyExpectedTTFT, record.StrategyRoundRobin, record.StrategyPowerOfTwo
	var out []Target

	d, b := r.cell(WorkloadSharedPrefix, top, def), r.cell(WorkloadSharedPrefix, top, rr)
	at := fmt.Sprintf("shared_prefix at %.0f%%", 100*top)
	ttft := Target{Name: at + ": TTFT p90, " + def + " vs round_robin", Want: fmt.Sprintf("≤ 1/%d of round_robin's", targetTTFTRatio)}
	hit := Target{Name: at + ": prefix hit rate, " + def + " vs round_robin", Want: fmt.Sprintf("≥ %d× round_robin's", targetHitRatio)}
	if d != nil && b != nil {
		ttft.Judged, hit.Judged = true, true
		ttft.Met = d.ok > 0 && d.ttft[1]*targetTTFTRatio <= b.ttft[1]
		ttft.Got = fmt.Sprintf("%s vs %s (%s)", fmtSeconds(d.ttft[1]), fmtSeconds(b.ttft[1]), fmtRatio(b.ttft[1], d.ttft[1]))
		hit.Met = d.hitKnown && b.hitKnown && d.hit >= targetHitRatio*b.hit
		hit.Got = fmt.Sprintf("%s vs %s (%s)", fmtShare(d.hit, d.hitKnown), fmtShare(b.hit, b.hitKnown), fmtTimes(d.hit, b.hit))
	}
	out = append(out, ttft, hit)

	for _, load := range r.o.Loads {
		d, p := r.cell(WorkloadNoSharing, load, def), r.cell(WorkloadNoSharing, load, p2)
		at := fmt.Sprintf("no_sharing at %.0f%%", 100*load)
		tt := Target{Name: at + ": TTFT p90, " + def + " vs power_of_two", Want: "≤ power_of_two's + 5 %"}
		tp := Target{Name: at + ": output tokens/s, " + def + " vs power_of_two", Want: "≥ power_of_two's − 5 %"}
		if d != nil && p != nil {
			tt.Judged, tp.Judged = true, true
			tt.Met = d.ok > 0 && d.ttft[1] <= (1+targetTolerance)*p.ttft[1]
			tt.Got = fmt.Sprintf("%s vs %s (%s)", fmtSeconds(d.ttft[1]), fmtSeconds(p.ttft[1]), fmtChange(d.ttft[1], p.ttft[1]))
			tp.Met = d.tokensPerSec >= (1-targetTolerance)*p.tokensPerSec
			tp.Got = fmt.Sprintf("%.0f vs %.0f (%s)", d.tokensPerSec, p.tokensPerSec, fmtChange(d.tokensPerSec, p.tokensPerSec))
		}
		out = append(out, tt, tp)
	}

	errs := Target{Name: "errors below capacity, every strategy", Want: "0"}
	var bad []string
	total := 0
	for _, c := range r.cells {
		if c.load >= 1 {
			continue
		}
		errs.Judged = true
		if c.errors > 0 {
			total += c.errors
			bad = append(bad, fmt.Sprintf("%s %s@%.0f%%: %s", strategyName(c.strategy), c.workload, 100*c.load, fmtErrors(c.summary)))
		}
	}
	errs.Met = total == 0
	errs.Got = fmt.Sprint(total)
	if len(bad) > 0 {
		errs.Got += " (" + strings.Join(bad, "; ") + ")"
	}
	return append(out, errs)
}

func strategyName(s string) string {
	if s == record.StrategyExpectedTTFT {
		return "**" + s + "** (default)"
	}
	return s
}

// fmtSeconds prints simulated seconds: ms below one second.
func fmtSeconds(v float64) string {
	switch {
	case v <= 0:
		return "0"
	case v < 0.01:
		return fmt.Sprintf("%.1f ms", v*1000)
	case v < 1:
		return fmt.Sprintf("%.0f ms", v*1000)
	}
	return fmt.Sprintf("%.2f s", v)
}

// fmtRange is " (min–max)" of the runs' values; "" for one run.
func fmtRange(xs []float64) string {
	if len(xs) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%s–%s)", fmtSeconds(slices.Min(xs)), fmtSeconds(slices.Max(xs)))
}

func fmtShare(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func fmtErrors(s summary) string {
	if s.errors == 0 {
		return "0"
	}
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(s.errCodes)) {
		parts = append(parts, fmt.Sprintf("%d×%s", s.errCodes[code], code))
	}
	return fmt.Sprintf("%d (%s)", s.errors, strings.Join(parts, ", "))
}

// fmtRatio is big/small as "1/N" (how many times smaller small is).
func fmtRatio(big, small float64) string {
	if small <= 0 {
		return "–"
	}
	return fmt.Sprintf("1/%.1f", big/small)
}

func fmtTimes(a, b float64) string {
	if b <= 0 {
		if a > 0 {
			return "∞×"
		}
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// fmtChange is a relative to b, signed, in percent.
func fmtChange(a, b float64) string {
	if b == 0 || math.IsNaN(a) {
		return "–"
	}
	return fmt.Sprintf("%+.1f %%", 100*(a-b)/b)
}
