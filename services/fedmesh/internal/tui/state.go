package tui

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"time"

	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Bounds of what the state keeps, so a long-running top stays small.
const (
	maxRoutes        = 1000 // rows of the routing tail
	maxPending       = 4096 // outcomes waiting for their decision (decisions are batched, outcomes are not)
	modelWindow      = 500  // successful requests behind a model's percentiles
	seriesLen        = 60   // points behind a sparkline (stats events, and quiet ticks)
	maxTenantSeries  = 1000 // tenants with a sparkline; the rest show "-"
	unfinishedWithin = wire.DefaultTimeout
)

// Sources of Ignored.
const (
	srcCatalog   = "fed_catalog"
	srcHealth    = "fed_health"
	srcConfig    = "fed_config"
	srcBeats     = "fed.heartbeat.*"
	srcDecisions = "fed.router.decisions"
	srcOutcomes  = "fed.outcome.*"
	srcUnplaced  = "fed.router.unplaced"
	srcStats     = "fed.health.stats"
)

// statsQuiet: a followed health instance that published nothing for this
// long has nothing new (it publishes every change within
// health.StatsEventEvery): the mesh is quiet, its rate is zero, and an
// event of another instance may be taken.
const statsQuiet = 2 * health.StatsEventEvery

// state is what the source has seen, updated by one apply call at a time
// (the source holds its lock) and copied out by snapshot.
type state struct {
	since   time.Time
	catalog map[string]record.Node
	health  map[string]record.Health
	models  map[modelKey]*modelWin
	beats   map[string]heartbeat

	routes  []*Route            // oldest first
	byReq   map[string][]*Route // the rows of each request id, oldest first
	pending map[string][]record.Outcome
	pendQ   []string // request ids of pending, oldest first

	stats     StatsData
	prevStats *record.Stats // the counters behind the newest point
	pointAt   time.Time     // when the newest point was added
	statsFrom string        // the health instance followed ("" = any)
	statsRecv time.Time     // when the last stats were taken
	config    map[string]*ConfigEntry
	ignored   map[string]*Ignored
}

type modelKey struct{ node, model string }

type heartbeat struct {
	hb record.Heartbeat
	at time.Time
}

// modelWin keeps the last modelWindow successful requests of a model.
type modelWin struct {
	requests, failures int64
	lat, ttft, tpot    ring
}

// ring is a fixed-size window of float64, oldest overwritten first.
type ring struct {
	v    []float64
	next int
}

func (r *ring) add(x float64) {
	if len(r.v) < modelWindow {
		r.v = append(r.v, x)
		return
	}
	r.v[r.next] = x
	r.next = (r.next + 1) % modelWindow
}

// percentile is the nearest-rank p-th percentile (0 when empty), as health computes it.
func (r *ring) percentile(p float64) float64 {
	if len(r.v) == 0 {
		return 0
	}
	s := append([]float64(nil), r.v...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func newState(now time.Time) *state {
	s := &state{
		since:   now,
		catalog: map[string]record.Node{},
		health:  map[string]record.Health{},
		models:  map[modelKey]*modelWin{},
		beats:   map[string]heartbeat{},
		byReq:   map[string][]*Route{},
		pending: map[string][]record.Outcome{},
		config:  map[string]*ConfigEntry{},
		ignored: map[string]*Ignored{},
	}
	s.stats.Nodes, s.stats.Tenants = map[string]Series{}, map[string]Series{}
	base := router.DefaultConfig().Policy
	for _, k := range []string{record.ConfigKeyPolicy, record.ConfigKeyRegions, record.ConfigKeyTenants} {
		s.config[k] = &ConfigEntry{Key: k, Known: true, Policy: base}
	}
	return s
}

func (s *state) ignore(src string, err error) {
	ig := s.ignored[src]
	if ig == nil {
		ig = &Ignored{Source: src}
		s.ignored[src] = ig
	}
	ig.Count++
	ig.Last = err.Error()
}

// applyCatalog follows fed_catalog: nodes.<id> → record.Node. A value that
// does not decode is ignored (and counted) and the node's previous record
// kept, as every reader of the bucket does (DESIGN §5).
func (s *state) applyCatalog(key string, deleted bool, value []byte) {
	id := buckets.NodeIDOfKey(key)
	if id == "" {
		return
	}
	if deleted {
		delete(s.catalog, id)
		return
	}
	n, err := record.DecodeNode(key, value)
	if err != nil {
		s.ignore(srcCatalog, err)
		return
	}
	s.catalog[id] = n
}

// applyHealth follows fed_health: nodes.<id> → record.Health; the stats.*
// keys are health's own (fed.stats answers them) and are skipped.
func (s *state) applyHealth(key string, deleted bool, value []byte) {
	id := buckets.NodeIDOfKey(key)
	if id == "" {
		return
	}
	if deleted {
		delete(s.health, id)
		return
	}
	h, err := record.DecodeHealth(key, value)
	if err != nil {
		s.ignore(srcHealth, err)
		return
	}
	s.health[id] = h
}

// applyHeartbeat keeps a node's latest heartbeat; nodes neither bucket
// knows are not listed (health writes a record for every node it hears).
func (s *state) applyHeartbeat(hb record.Heartbeat, at time.Time) {
	s.beats[hb.NodeID] = heartbeat{hb, at}
	if len(s.beats) > 4*(len(s.catalog)+len(s.health))+64 {
		for id := range s.beats { // a flood of made-up ids: keep the known ones
			if _, ok := s.catalog[id]; !ok {
				if _, ok := s.health[id]; !ok {
					delete(s.beats, id)
				}
			}
		}
	}
}

// applyConfig follows fed_config with the routers' own decoders: a valid
// value goes in force, a deleted key returns to the router's base, an
// invalid value is recorded as rejected and the last good one stays in
// force (DESIGN §5.3). Replaying the bucket's history gives the same
// answer a router that saw every write would have.
func (s *state) applyConfig(key string, rev uint64, at time.Time, deleted bool, value []byte) {
	e := s.config[key]
	if e == nil {
		e = &ConfigEntry{Key: key}
		s.config[key] = e
	}
	e.Revision, e.Updated = rev, at
	if deleted {
		e.Present, e.Value, e.Valid, e.InForceRev = false, "", true, 0
		e.Policy, e.Regions, e.Tenants = router.DefaultConfig().Policy, nil, nil
		return
	}
	e.Present, e.Value = true, compactJSON(value)
	if !e.Known {
		e.Valid = true
		return
	}
	var err error
	switch key {
	case record.ConfigKeyPolicy:
		var p record.Policy
		if p, err = router.DecodePolicy(router.DefaultConfig().Policy, value); err == nil {
			e.Policy = p
		}
	case record.ConfigKeyRegions:
		var r record.Regions
		if r, err = router.DecodeRegions(value); err == nil {
			e.Regions = r
		}
	case record.ConfigKeyTenants:
		var t record.Tenants
		if t, err = router.DecodeTenants(value); err == nil {
			e.Tenants = t
		}
	}
	e.Valid = err == nil
	if err != nil {
		e.Rejected = &Rejection{Revision: rev, At: at, Value: e.Value, Reason: err.Error()}
		return
	}
	e.InForceRev = rev
}

// compactJSON is value on one line when it is JSON, else as it came.
func compactJSON(value []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, value) == nil {
		return b.String()
	}
	return string(value)
}

// applyDecisions adds a batch of a router's placements to the tail. An
// outcome that arrived first (decisions wait up to 250 ms in a batch) is
// joined at once.
func (s *state) applyDecisions(d record.Decisions, now time.Time) {
	for i := range d.Decisions {
		dec := d.Decisions[i]
		id := dec.RequestID
		var r *Route
		if id != "" {
			// An unplaced event that came first names the same request.
			for _, x := range s.byReq[id] {
				if x.Decision == nil {
					r = x
				}
			}
		}
		if r == nil {
			r = s.addRoute(id, now)
		}
		r.Decision, r.Router = &dec, d.Router
		if id == "" {
			continue
		}
		if outs := s.pending[id]; len(outs) > 0 {
			for j, o := range outs {
				if o.NodeID == dec.Node {
					o := o
					r.Outcome = &o
					s.pending[id] = append(outs[:j:j], outs[j+1:]...)
					break
				}
			}
			if len(s.pending[id]) == 0 {
				delete(s.pending, id)
			}
		}
	}
}

func (s *state) addRoute(id string, now time.Time) *Route {
	r := &Route{Seen: now}
	s.routes = append(s.routes, r)
	if id != "" {
		s.byReq[id] = append(s.byReq[id], r)
	}
	if len(s.routes) > 2*maxRoutes {
		drop := s.routes[:len(s.routes)-maxRoutes]
		for _, old := range drop {
			s.unindex(old)
		}
		s.routes = append([]*Route(nil), s.routes[len(s.routes)-maxRoutes:]...)
	}
	return r
}

func (s *state) unindex(r *Route) {
	id := r.RequestID()
	rs := s.byReq[id]
	for i, x := range rs {
		if x == r {
			rs = append(rs[:i:i], rs[i+1:]...)
			break
		}
	}
	if len(rs) == 0 {
		delete(s.byReq, id)
	} else {
		s.byReq[id] = rs
	}
}

// applyOutcome joins a completed outcome to its decision (same request id
// and node) and feeds the node's model window. Other kinds are not the
// end of a placement and are left to health.
func (s *state) applyOutcome(o record.Outcome) {
	if o.Kind != record.OutcomeCompleted {
		return
	}
	s.addModelSample(&o)
	if o.RequestID == "" {
		return
	}
	rs := s.byReq[o.RequestID]
	for i := len(rs) - 1; i >= 0; i-- {
		if r := rs[i]; r.Decision != nil && r.Decision.Node == o.NodeID && r.Outcome == nil {
			r.Outcome = &o
			return
		}
	}
	// Its decision is still in a router's batch: keep it for the join.
	for len(s.pending) >= maxPending && len(s.pendQ) > 0 {
		delete(s.pending, s.pendQ[0]) // the oldest; ids joined since are gone already
		s.pendQ = s.pendQ[1:]
	}
	if _, ok := s.pending[o.RequestID]; !ok {
		s.pendQ = append(s.pendQ, o.RequestID)
	}
	s.pending[o.RequestID] = append(s.pending[o.RequestID], o)
	if len(s.pendQ) > 2*maxPending { // mostly ids joined since: drop those
		q := make([]string, 0, len(s.pending))
		for _, id := range s.pendQ {
			if _, ok := s.pending[id]; ok {
				q = append(q, id)
			}
		}
		s.pendQ = q
	}
}

func (s *state) addModelSample(o *record.Outcome) {
	model := o.Model
	if model == "" {
		model = "-"
	}
	k := modelKey{o.NodeID, model}
	w := s.models[k]
	if w == nil {
		w = &modelWin{}
		s.models[k] = w
	}
	w.requests++
	if !o.OK {
		w.failures++
		return
	}
	if o.LatencyMs > 0 {
		w.lat.add(o.LatencyMs)
	}
	if o.TTFTMs > 0 {
		w.ttft.add(o.TTFTMs)
		if o.Tokens > 1 && o.LatencyMs > o.TTFTMs {
			w.tpot.add((o.LatencyMs - o.TTFTMs) / float64(o.Tokens-1))
		}
	}
}

// applyUnplaced ends the request's latest row, or adds a row for a
// request no decision named (the router found no node for it).
func (s *state) applyUnplaced(u record.Unplaced, now time.Time) {
	if u.RequestID != "" {
		if rs := s.byReq[u.RequestID]; len(rs) > 0 {
			if r := rs[len(rs)-1]; r.Unplaced == nil {
				r.Unplaced = &u
				return
			}
		}
	}
	r := s.addRoute(u.RequestID, now)
	r.Unplaced = &u
}

// applyStats takes one stats answer (from "": the fed.stats reply) or
// event (from: the publishing health instance) and extends the
// sparklines. Every instance converges on the same counters, but two
// interleaved would make a saw of the rates: top follows one instance,
// and takes another's event only once the followed one has been quiet
// for statsQuiet (it went away, or the mesh went quiet). A fed.stats
// reply names no instance: the next event of any is taken.
func (s *state) applyStats(from string, st record.Stats, at time.Time) {
	if from != "" && s.statsFrom != "" && from != s.statsFrom && at.Sub(s.statsRecv) < statsQuiet {
		return
	}
	s.statsFrom, s.statsRecv = from, at
	prev, prevAt := s.prevStats, s.pointAt
	rate := func(cur int64, prevTotal func(*record.Stats) (int64, bool)) float64 {
		if prev == nil {
			return math.NaN()
		}
		p, ok := prevTotal(prev)
		dt := at.Sub(prevAt).Seconds()
		if !ok || dt <= 0 || cur < p { // counters reset (fed_health wiped)
			return math.NaN()
		}
		return float64(cur-p) / dt
	}
	s.addPoint(st, at, func(c record.Counters, prevOf func(*record.Stats) (record.Counters, bool)) float64 {
		return rate(c.TotalRequests, func(p *record.Stats) (int64, bool) {
			pc, ok := prevOf(p)
			return pc.TotalRequests, ok
		})
	})
	s.stats.Have, s.stats.At, s.stats.Stats, s.stats.Err = true, at, st, ""
	s.prevStats = &st
}

// statsQuietTick adds a zero-rate point when no stats came for statsQuiet:
// health publishes every change, so none means no request ended.
func (s *state) statsQuietTick(now time.Time) {
	if !s.stats.Have || now.Sub(s.statsRecv) < statsQuiet {
		return
	}
	s.addPoint(s.stats.Stats, now, func(record.Counters, func(*record.Stats) (record.Counters, bool)) float64 { return 0 })
}

// addPoint extends every series with a point at at: rate of each slice
// (given the slice's counters and how to find it in the previous stats)
// and its p99.
func (s *state) addPoint(st record.Stats, at time.Time, rate func(record.Counters, func(*record.Stats) (record.Counters, bool)) float64) {
	s.stats.Overall = extend(s.stats.Overall, rate(st.Counters, func(p *record.Stats) (record.Counters, bool) {
		return p.Counters, true
	}), st.LatencyP99Ms)
	nodes := make(map[string]Series, len(st.Nodes))
	for id, c := range st.Nodes {
		nodes[id] = extend(s.stats.Nodes[id], rate(c, func(p *record.Stats) (record.Counters, bool) {
			pc, ok := p.Nodes[id]
			return pc, ok
		}), c.LatencyP99Ms)
	}
	tenants := make(map[string]Series, min(len(st.Tenants), maxTenantSeries))
	for _, name := range sortedKeys(st.Tenants) {
		if len(tenants) == maxTenantSeries {
			break
		}
		c := st.Tenants[name]
		tenants[name] = extend(s.stats.Tenants[name], rate(c, func(p *record.Stats) (record.Counters, bool) {
			pc, ok := p.Tenants[name]
			return pc, ok
		}), c.LatencyP99Ms)
	}
	s.stats.Nodes, s.stats.Tenants = nodes, tenants
	s.pointAt = at
}

func (s *state) statsFailed(err error, at time.Time) {
	s.stats.Err, s.stats.ErrAt = err.Error(), at
}

func extend(s Series, rate, p99 float64) Series {
	if p99 <= 0 {
		p99 = math.NaN()
	}
	return Series{Rate: push(s.Rate, rate), P99: push(s.P99, p99)}
}

// push appends x to a copy of v, keeping the last seriesLen points (the
// copy keeps snapshots already handed out unchanged).
func push(v []float64, x float64) []float64 {
	start := max(0, len(v)+1-seriesLen)
	out := make([]float64, 0, seriesLen)
	out = append(out, v[start:]...)
	return append(out, x)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// snapshot copies the state out for the views.
func (s *state) snapshot(now time.Time) Data {
	d := Data{Taken: now, Since: s.since, Stats: s.stats}
	regions := s.config[record.ConfigKeyRegions].Regions
	ids := map[string]bool{}
	for id := range s.catalog {
		ids[id] = true
	}
	for id := range s.health {
		ids[id] = true
	}
	for _, id := range sortedKeys(ids) {
		n := NodeData{ID: id}
		if c, ok := s.catalog[id]; ok {
			c.Models = append([]record.Model(nil), c.Models...)
			n.Catalog = &c
			cl := c.Clearance
			if r, ok := regions[c.Region]; ok && r.Privacy != nil && *r.Privacy < cl {
				cl, n.Capped = *r.Privacy, true
			}
			n.Clearance = cl.String()
		}
		if h, ok := s.health[id]; ok {
			n.Health = &h
		}
		if b, ok := s.beats[id]; ok {
			n.Heartbeat, n.HeartbeatAt = &b.hb, b.at
		}
		if c, ok := s.stats.Stats.Nodes[id]; ok && s.stats.Have {
			n.Counters = &c
		}
		d.Nodes = append(d.Nodes, n)
	}
	for i := len(s.routes) - 1; i >= 0; i-- {
		r := *s.routes[i]
		d.Routes = append(d.Routes, r)
		if r.Decision == nil || r.Finished() || now.Sub(r.Decision.Time) > unfinishedWithin {
			continue
		}
		if n := d.node(r.Decision.Node); n != nil {
			n.Unfinished++
			if h := n.Health; h != nil && h.Circuit == record.CircuitHalfOpen && r.Decision.Time.After(h.CircuitOpenedAt) {
				n.ProbeInFlight = true
			}
		}
	}
	keys := make([]modelKey, 0, len(s.models))
	for k := range s.models {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].node != keys[j].node {
			return keys[i].node < keys[j].node
		}
		return keys[i].model < keys[j].model
	})
	for _, k := range keys {
		w := s.models[k]
		d.Models = append(d.Models, ModelData{Node: k.node, Model: k.model, Requests: w.requests, Failures: w.failures,
			Samples: len(w.lat.v), P50Ms: w.lat.percentile(50), P99Ms: w.lat.percentile(99),
			TTFTP50Ms: w.ttft.percentile(50), TPOTP50Ms: w.tpot.percentile(50)})
	}
	for _, k := range []string{record.ConfigKeyPolicy, record.ConfigKeyRegions, record.ConfigKeyTenants} {
		d.Config = append(d.Config, copyEntry(s.config[k]))
	}
	for _, k := range sortedKeys(s.config) {
		if e := s.config[k]; !e.Known {
			d.Config = append(d.Config, copyEntry(e))
		}
	}
	for _, k := range sortedKeys(s.ignored) {
		d.Ignored = append(d.Ignored, *s.ignored[k])
	}
	return d
}

// copyEntry copies e; maps are replaced whole on every write, so sharing
// them with a snapshot is safe.
func copyEntry(e *ConfigEntry) ConfigEntry {
	c := *e
	if e.Rejected != nil {
		r := *e.Rejected
		c.Rejected = &r
	}
	return c
}
