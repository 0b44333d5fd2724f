package benchrouting

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// cellResult is a workload at one load under one strategy: its runs'
// samples pooled.
type cellResult struct {
	workload string
	load     float64 // share of the fleet's capacity
	rate     float64 // offered requests per simulated second
	strategy string
	summary
	runP90 []float64     // each run's own TTFT p90 (simulated s), with Options.Repeat > 1
	wall   time.Duration // real time of its runs, meshes' start and stop included
	lag    time.Duration // the latest an arrival was sent after its time (real)
}

// cellRun is one run of a cell.
type cellRun struct {
	samples       []sample
	before, after []prefixCounters
	lag, wall     time.Duration
}

// runCell runs the cell o.Repeat times, run i with seed+i, and pools the
// runs: their samples one after the other in time (so the span, and the
// rates over it, add up), their servers' counters side by side.
func runCell(ctx context.Context, o *Options, w workload, load, rate float64, strategy string, seed uint64) (cellResult, error) {
	res := cellResult{workload: w.name(), load: load, rate: rate, strategy: strategy}
	var pooled []sample
	var before, after []prefixCounters
	var profiles []string
	profileOf := map[string]string{}
	ids := nodeIDs(o.Fleet)
	for i, s := range o.Fleet {
		profileOf[ids[i]] = s.Profile.Name
	}
	var offset time.Duration
	for i := range o.Repeat {
		run, err := runOnce(ctx, o, w, load, rate, strategy, seed+uint64(i))
		if err != nil {
			return res, fmt.Errorf("%s at %.0f%% under %s: %w", w.name(), 100*load, strategy, err)
		}
		res.wall += run.wall
		res.lag = max(res.lag, run.lag)
		if o.Repeat > 1 {
			one := summarise(run.samples, o.TimeScale, o.GoodputTTFT, profileOf)
			res.runP90 = append(res.runP90, one.ttft[1])
		}
		var last time.Duration
		for _, s := range run.samples {
			last = max(last, s.end)
			s.sent, s.first, s.last, s.end = s.sent+offset, s.first+offset, s.last+offset, s.end+offset
			pooled = append(pooled, s)
		}
		offset += last
		before, after = append(before, run.before...), append(after, run.after...)
		for _, s := range o.Fleet {
			profiles = append(profiles, s.Profile.Name)
		}
	}
	res.summary = summarise(pooled, o.TimeScale, o.GoodputTTFT, profileOf)
	res.addHitRates(profiles, before, after)
	return res, nil
}

// runOnce starts a fresh rig with the strategy, sends requests of w at
// Poisson arrivals of rate per simulated second for o.Duration (simulated
// time), waits for every answer and reads the servers' prefix-cache
// counters before and after. The arrivals and prompts come from seed, the
// same for every strategy.
func runOnce(ctx context.Context, o *Options, w workload, load, rate float64, strategy string, seed uint64) (cellRun, error) {
	t0 := time.Now()
	var run cellRun
	r, err := startRig(ctx, o, strategy)
	if err != nil {
		return run, err
	}
	defer r.close()
	if run.before, err = r.prefix(); err != nil {
		return run, err
	}
	var dl *decisionLog
	if o.Trace != nil {
		if dl, err = watchDecisions(r.nc); err != nil {
			return run, err
		}
	}
	src := w.source(seed)
	// arrivals in real time: the rate per simulated second times the scale
	times := arrivals(newRand(seed, 7), rate*o.TimeScale, scaled(o.Duration, o.TimeScale))
	samples := make([]sample, len(times))
	ids := make([]string, len(times))
	turns := make([]*turn, len(times))
	timeout := scaled(o.Timeout, o.TimeScale)
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, at := range times {
		if d := time.Until(start.Add(at)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				wg.Wait()
				return run, ctx.Err()
			case <-timer.C:
			}
		}
		run.lag = max(run.lag, time.Since(start)-at)
		t := src.next()
		ids[i], turns[i] = fmt.Sprintf("bench-%d-%d", seed, i), t
		wg.Go(func() {
			s, answer := r.one(ctx, t, ids[i], start, timeout)
			src.done(t, answer, s.ok())
			s.group = t.group
			samples[i] = s
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return run, err
	}
	if run.after, err = r.prefix(); err != nil {
		return run, err
	}
	run.samples = samples
	if dl != nil {
		// the router publishes decisions in batches on a short timer
		time.Sleep(200 * time.Millisecond)
		dl.stop(r.nc)
		writeTrace(o.Trace, o, w.name(), load, strategy, seed, samples, ids, turns, dl)
	}
	if err := r.close(); err != nil {
		o.logf("  (stopping the %s rig: %v)", strategy, err)
	}
	run.wall = time.Since(t0)
	return run, nil
}

// one sends a streamed request and times its tokens as they arrive.
func (r *rig) one(ctx context.Context, t *turn, id string, start time.Time, timeout time.Duration) (s sample, answer string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s.sent = time.Since(start)
	defer func() { s.end = time.Since(start) }()
	st, err := r.c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Body: t.body, RequestID: id})
	if err != nil {
		s.err = err
		return s, ""
	}
	defer st.Close()
	var b strings.Builder
	for ch, err := range st.Chunks() {
		now := time.Since(start)
		if err != nil {
			s.err = err
			return s, ""
		}
		if s.tokens == 0 {
			s.first, s.node = now, ch.Node
		}
		s.last = now
		s.tokens++
		b.Write(ch.Data)
	}
	if _, err := st.Result(); err != nil {
		s.err = err
		return s, ""
	}
	return s, b.String()
}
