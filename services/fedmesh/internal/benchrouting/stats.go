package benchrouting

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// percentile of sorted values, q in [0,1], by nearest rank; 0 for none.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// prefixCounters are a server's vllm:prefix_cache_queries_total and
// vllm:prefix_cache_hits_total (tokens).
type prefixCounters struct {
	queries, hits float64
}

// counterDelta is how much a counter grew from before to after; a counter
// that went down was reset (its server restarted and counts from 0 again),
// so all of after is new.
func counterDelta(before, after float64) float64 {
	if after < before {
		return after
	}
	return after - before
}

// hitRate is the prefix-cache hit rate over a run: Σ Δhits / Σ Δqueries
// over the servers (before[i] and after[i] are server i's counters); ok is
// false when no server was queried.
func hitRate(before, after []prefixCounters) (rate float64, ok bool) {
	var q, h float64
	for i := range min(len(before), len(after)) {
		q += counterDelta(before[i].queries, after[i].queries)
		h += counterDelta(before[i].hits, after[i].hits)
	}
	if q <= 0 {
		return 0, false
	}
	return h / q, true
}

// scrapePrefix reads the prefix-cache counters from a server's own
// registry (what its /metrics serves), summed over its series.
func scrapePrefix(g prometheus.Gatherer) (prefixCounters, error) {
	mfs, err := g.Gather()
	if err != nil {
		return prefixCounters{}, err
	}
	var c prefixCounters
	found := 0
	for _, mf := range mfs {
		var dst *float64
		switch mf.GetName() {
		case simserver.MetricPrefixQueries:
			dst = &c.queries
		case simserver.MetricPrefixHits:
			dst = &c.hits
		default:
			continue
		}
		found++
		for _, m := range mf.GetMetric() {
			*dst += m.GetCounter().GetValue()
		}
	}
	if found < 2 {
		return c, errors.New("no " + simserver.MetricPrefixQueries + " / " + simserver.MetricPrefixHits + " series")
	}
	return c, nil
}

// sample is one request as the client saw it; times are real, from the
// start of the run.
type sample struct {
	node   string
	group  int // the prefix it shares (turn.group); -1: none
	sent   time.Duration
	first  time.Duration // first token (valid when tokens > 0)
	last   time.Duration // last token
	end    time.Duration // final message or error
	tokens int
	err    error
}

func (s *sample) ok() bool { return s.err == nil && s.tokens > 0 }

// summary is a run's figures, times in simulated seconds.
type summary struct {
	requests, ok, errors int
	errCodes             map[string]int // error code → count
	ttft                 [3]float64     // p50, p90, p99
	itl                  [2]float64     // p50, p90 over answers of each one's mean gap between tokens
	tokensPerSec         float64        // output tokens of answered requests over the run's span
	goodput              float64        // answered requests with TTFT ≤ the bound, per second
	goodShare            float64        // … as a share of the requests
	hit                  float64
	hitKnown             bool
	share                map[string]float64 // profile → share of answered requests
	byProfile            map[string]profileFigures
	// spread is how many servers a shared prefix (a shared_prefix group,
	// a conversation) was sent to, on average over prefixes: 1 is perfect
	// affinity; 0 when nothing is shared.
	spread float64
}

type profileFigures struct {
	requests int
	ttftP90  float64
	hit      float64
	hitKnown bool
}

// summarise turns the samples of one run into its figures: real times are
// multiplied by scale (simulated seconds per real second); goodBound is the
// goodput's TTFT bound in simulated time; profileOf maps a node to its
// server's profile.
func summarise(samples []sample, scale float64, goodBound time.Duration, profileOf map[string]string) summary {
	s := summary{requests: len(samples), errCodes: map[string]int{}, share: map[string]float64{}, byProfile: map[string]profileFigures{}}
	if len(samples) == 0 {
		return s
	}
	sim := func(d time.Duration) float64 { return d.Seconds() * scale }
	start, end := samples[0].sent, samples[0].end
	var ttfts, gaps []float64
	perProfile := map[string][]float64{}
	tokens, good := 0, 0
	for i := range samples {
		r := &samples[i]
		start, end = min(start, r.sent), max(end, r.end)
		if !r.ok() {
			s.errors++
			s.errCodes[errCode(r.err)]++
			continue
		}
		s.ok++
		t := sim(r.first - r.sent)
		ttfts = append(ttfts, t)
		if t <= goodBound.Seconds() {
			good++
		}
		// each answer's mean gap: the event loops deliver tokens in
		// bursts of about a millisecond of real time, which a single gap
		// at 20× shows as 0 or 20 ms; the mean over an answer does not
		if r.tokens > 1 {
			gaps = append(gaps, sim(r.last-r.first)/float64(r.tokens-1))
		}
		tokens += r.tokens
		p := profileOf[r.node]
		perProfile[p] = append(perProfile[p], t)
	}
	s.spread = spread(samples)
	slices.Sort(ttfts)
	slices.Sort(gaps)
	s.ttft = [3]float64{percentile(ttfts, 0.5), percentile(ttfts, 0.9), percentile(ttfts, 0.99)}
	s.itl = [2]float64{percentile(gaps, 0.5), percentile(gaps, 0.9)}
	if span := sim(end - start); span > 0 {
		s.tokensPerSec = float64(tokens) / span
		s.goodput = float64(good) / span
	}
	s.goodShare = float64(good) / float64(len(samples))
	for p, ts := range perProfile {
		slices.Sort(ts)
		if s.ok > 0 {
			s.share[p] = float64(len(ts)) / float64(s.ok)
		}
		s.byProfile[p] = profileFigures{requests: len(ts), ttftP90: percentile(ts, 0.9)}
	}
	return s
}

// spread is the mean over shared prefixes (group ≥ 0) of the distinct
// servers that answered requests with it.
func spread(samples []sample) float64 {
	nodes := map[int]map[string]bool{}
	for i := range samples {
		r := &samples[i]
		if r.group < 0 || !r.ok() {
			continue
		}
		if nodes[r.group] == nil {
			nodes[r.group] = map[string]bool{}
		}
		nodes[r.group][r.node] = true
	}
	if len(nodes) == 0 {
		return 0
	}
	total := 0
	for _, ns := range nodes {
		total += len(ns)
	}
	return float64(total) / float64(len(nodes))
}

// addHitRates fills the run's hit rate, overall and per profile, from each
// server's counters before and after (profiles[i] is server i's).
func (s *summary) addHitRates(profiles []string, before, after []prefixCounters) {
	s.hit, s.hitKnown = hitRate(before, after)
	groups := map[string][2][]prefixCounters{}
	for i, p := range profiles {
		g := groups[p]
		g[0], g[1] = append(g[0], before[i]), append(g[1], after[i])
		groups[p] = g
	}
	for p, g := range groups {
		f := s.byProfile[p]
		f.hit, f.hitKnown = hitRate(g[0], g[1])
		s.byProfile[p] = f
	}
}

// errCode names an error by its wire code ("timeout" for a context that
// ran out first, "other" for anything else).
func errCode(err error) string {
	var we *wire.Error
	switch {
	case err == nil:
		return "no tokens"
	case errors.As(err, &we):
		return strconv.Itoa(we.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "other"
}
