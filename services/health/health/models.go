package health

import (
	"math"
	"slices"
	"strings"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Per-model statistics (fed_health `models`, DESIGN §5.2). The node-level
// percentiles mix every capability and model a node serves: one 31 ms
// embedding became the node's p50 for generate too (issue 14). So each
// (capability, model) has windows of its own, and TTFT, time per output
// token and decode throughput come from streams only: a whole answer's
// first token reaches the client with its last, so its TTFT is its latency
// and tokens / (latency − TTFT) explodes (37,441,497 tokens/s for one
// embedding).

// models is one node's per-model statistics, at most record.MaxModelStats
// entries. Guarded by Service.mu.
type models struct {
	size  int // window length of each entry
	m     map[string]*modelStats
	clock uint64 // bumped per sample: an entry's used is its latest tick
	// rendered is the map records carry, rebuilt only after a change
	// (renderedOK false). Records share it, so it is never mutated.
	rendered   map[string]record.ModelStats
	renderedOK bool
}

// modelStats is one capability/model's windows on one node.
type modelStats struct {
	lat  window // latency_ms of successful requests
	ttft window // ttft_ms of successful streams
	tpot window // (latency − ttft) / (tokens − 1) of successful streams with > 1 token
	// decodeTokens and decodeMs are tokens − 1 and latency − ttft of the
	// same streams, added in step: throughput is their sums' ratio, so one
	// stream whose tokens came all at once cannot dominate it.
	decodeTokens, decodeMs window
	used                   uint64             // models.clock at the latest sample; 0: seeded only
	seed                   *record.ModelStats // what fed_health held at start, shown until own samples
	out                    record.ModelStats  // rendered; valid unless dirty
	dirty                  bool
}

func newModels(size int) models { return models{size: size} }

// add counts a successful completed request, or a node's warm-up (a probe
// outcome naming its model, DESIGN §9.2), in its capability/model's
// windows. Outcomes without a valid capability and model id (the decoders
// do not check them) are left out: keys come from the bus and end up in
// fed_health.
func (ms *models) add(o *record.Outcome) {
	if o.Kind != record.OutcomeCompleted && o.Kind != record.OutcomeProbe || !o.OK || o.Capability == "" || o.Model == "" ||
		wire.ValidateCapability(o.Capability) != nil || wire.ValidateID("model", o.Model) != nil {
		return
	}
	e := ms.entry(record.ModelStatsKey(o.Capability, o.Model))
	ms.clock++
	e.used = ms.clock
	e.add(o)
	ms.renderedOK = false
}

// entry returns key's entry, creating it; beyond MaxModelStats the least
// recently updated entry makes room (seeded ones first, by key).
func (ms *models) entry(key string) *modelStats {
	if e := ms.m[key]; e != nil {
		return e
	}
	if ms.m == nil {
		ms.m = map[string]*modelStats{}
	}
	if len(ms.m) >= record.MaxModelStats {
		ms.evict()
	}
	e := &modelStats{lat: newWindow(ms.size), ttft: newWindow(ms.size), tpot: newWindow(ms.size),
		decodeTokens: newWindow(ms.size), decodeMs: newWindow(ms.size), dirty: true}
	ms.m[key] = e
	return e
}

// evict drops the least recently updated entry.
func (ms *models) evict() {
	var oldest string
	var at uint64 = math.MaxUint64
	for k, e := range ms.m {
		if e.used < at || e.used == at && k < oldest {
			oldest, at = k, e.used
		}
	}
	delete(ms.m, oldest)
	ms.renderedOK = false
}

func (e *modelStats) add(o *record.Outcome) {
	e.dirty = true
	e.lat.add(o.LatencyMs)
	// ttft > latency cannot happen on one clock: no timing to trust.
	if !o.Stream || o.TTFTMs <= 0 || o.TTFTMs > o.LatencyMs {
		return
	}
	e.ttft.add(o.TTFTMs)
	decode := o.LatencyMs - o.TTFTMs
	if o.Tokens <= 1 || decode <= 0 {
		return // no token after the first, or no time between them
	}
	e.tpot.add(decode / float64(o.Tokens-1))
	e.decodeTokens.add(float64(o.Tokens - 1))
	e.decodeMs.add(decode)
}

// stats renders the entry, its windows sorted only after new samples.
func (e *modelStats) stats() record.ModelStats {
	if e.lat.len() == 0 && e.seed != nil {
		return *e.seed
	}
	if !e.dirty {
		return e.out
	}
	lat, ttft, tpot := e.lat.percentiles(50, 99), e.ttft.percentiles(50, 99), e.tpot.percentiles(50, 99)
	var tps float64
	if ms := e.decodeMs.sum(); ms > 0 {
		tps = e.decodeTokens.sum() / (ms / 1000)
	}
	e.out = record.ModelStats{
		TTFTP50Ms: roundMs(ttft[0]), TTFTP99Ms: roundMs(ttft[1]),
		TPOTP50Ms: roundMs(tpot[0]), TPOTP99Ms: roundMs(tpot[1]),
		LatencyP50Ms: roundMs(lat[0]), LatencyP99Ms: roundMs(lat[1]),
		ThroughputTPS: roundMs(min(tps, math.MaxFloat32)), // to 0.1 token/s; the decoders' bound
		Samples:       e.lat.len(),
		Streams:       e.ttft.len(),
	}
	e.dirty = false
	return e.out
}

// render is the records' `models`: nil when empty (omitted), else a map
// shared by every record until the next change.
func (ms *models) render() map[string]record.ModelStats {
	if ms.renderedOK {
		return ms.rendered
	}
	ms.rendered = nil
	if len(ms.m) > 0 {
		ms.rendered = make(map[string]record.ModelStats, len(ms.m))
		for k, e := range ms.m {
			ms.rendered[k] = e.stats()
		}
	}
	ms.renderedOK = true
	return ms.rendered
}

// seed adopts the per-model statistics a stored record holds (at start),
// each shown until this instance has samples of that model. Keys that are
// not "<capability>/<model_id>" are dropped; at most MaxModelStats, by key.
func (ms *models) seed(stored map[string]record.ModelStats) {
	keys := make([]string, 0, len(stored))
	for k := range stored {
		if validModelKey(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys[:min(len(keys), record.MaxModelStats)] {
		if e := ms.m[k]; e != nil && e.lat.len() > 0 {
			continue // own samples win
		}
		v := stored[k]
		ms.entry(k).seed = &v
	}
	ms.renderedOK = false
}

// validModelKey: capability names and model ids hold no '/'.
func validModelKey(k string) bool {
	c, m, ok := strings.Cut(k, "/")
	return ok && wire.ValidateCapability(c) == nil && wire.ValidateID("model", m) == nil
}

// sameModels reports whether two records' per-model statistics agree for
// routing: the same keys, the same side of "any data" and of the p99 trust
// threshold, and every number within 5 % (routine writes would otherwise
// follow every sample of a busy node).
func sameModels(a, b map[string]record.ModelStats) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || !sameModelStats(&x, &y) {
			return false
		}
	}
	return true
}

func sameModelStats(x, y *record.ModelStats) bool {
	side := func(a, b int) bool { return (a > 0) == (b > 0) && (a >= minSamplesForP99) == (b >= minSamplesForP99) }
	return side(x.Samples, y.Samples) && side(x.Streams, y.Streams) &&
		near(x.TTFTP50Ms, y.TTFTP50Ms) && near(x.TTFTP99Ms, y.TTFTP99Ms) &&
		near(x.TPOTP50Ms, y.TPOTP50Ms) && near(x.TPOTP99Ms, y.TPOTP99Ms) &&
		near(x.LatencyP50Ms, y.LatencyP50Ms) && near(x.LatencyP99Ms, y.LatencyP99Ms) &&
		near(x.ThroughputTPS, y.ThroughputTPS)
}

// modelChange is the relative change of a per-model number that is worth
// a routine write.
const modelChange = 0.05

// near: equal, or within modelChange of the larger; 0 against anything
// else is a change (the first sample).
func near(a, b float64) bool {
	if a == b {
		return true
	}
	return math.Abs(a-b) <= modelChange*max(math.Abs(a), math.Abs(b))
}

// sameServer compares server loads for routing: presence, running and
// waiting exactly (like in_flight), the shares to within serverShareChange;
// scraped_at never (it moves with every scrape).
func sameServer(a, b *record.ServerLoad) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Running == b.Running && a.Waiting == b.Waiting &&
		math.Abs(a.KVUsage-b.KVUsage) <= serverShareChange && math.Abs(a.PrefixHitRate-b.PrefixHitRate) <= serverShareChange
}

// serverShareChange is the change of kv_usage or prefix_hit_rate (0–1)
// worth a routine write.
const serverShareChange = 0.01
