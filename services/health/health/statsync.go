package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// One fed.stats, whichever instance answers. Every instance counts the
// events it sees; on its own that makes a restarted instance answer with
// the events since its start. So the counters are also kept in fed_health,
// under keys outside nodes.* (nothing that iterates node keys sees them):
//
//	stats.mesh            the overall slice and the unplaced counts
//	stats.nodes.<00-15>   per-node slices, node ids sharded by FNV-1a
//	stats.tenants.<00-15> per-tenant slices, tenant names sharded the same way
//
// Sharding keeps every value far below NATS's max_payload with 10,000 nodes
// and 10,000 tenants, and only a shard that changed is written.
//
// The merge is a join: every counter is the max of the two sides; the
// average's (sum, n) pair comes from the side with the larger n; the
// percentiles (p50, p99, ttft p50 and their sample count) come from the side
// with more samples, then more requests, then larger values. It is
// commutative, associative and idempotent, so merges in any order by any
// number of instances end at the same value.
//
//   - Every HeartbeatInterval an instance writes, for each key whose merged
//     value differs from what the bucket holds, merge(own, stored) with a
//     revision check (Create or Update with the last revision seen); on a
//     conflict it re-reads, merges again and retries.
//   - It follows the stats keys (buckets.FollowKeys) and answers fed.stats
//     with merge(own, last stored value seen). Own counters never absorb
//     the stored ones while running (both saw the same events: that would
//     count them twice).
//   - At start, before subscribing to events, it seeds its own counters
//     from the stored values, so it continues where the mesh was.

// Stats keys in fed_health.
const (
	statsMeshKey       = buckets.StatsPrefix + "mesh"
	statsNodesPrefix   = buckets.StatsPrefix + "nodes."
	statsTenantsPrefix = buckets.StatsPrefix + "tenants."
	// statsShards is how many keys the per-node and per-tenant maps are
	// spread over.
	statsShards = 16
)

// Bounds of a stored stats value, checked by decodeStats.
const (
	maxShardNodes    = 1 << 16 // node slices in one shard
	maxUnplacedCodes = 900     // wire codes 100–999
	maxSamples       = 1 << 24 // a latency window's length
)

// statSlice is one slice of fed.stats as stored: the counters, the latency
// sum behind the average, and the percentiles with their sample count.
type statSlice struct {
	TotalRequests      int64   `json:"total_requests,omitempty"`
	SuccessfulRequests int64   `json:"successful_requests,omitempty"`
	FailedRequests     int64   `json:"failed_requests,omitempty"`
	TotalTokens        int64   `json:"total_tokens,omitempty"`
	Retries            int64   `json:"retries,omitempty"`
	DuplicatesDropped  int64   `json:"duplicates_dropped,omitempty"`
	DispatchFailures   int64   `json:"dispatch_failures,omitempty"`
	LatencySumMs       float64 `json:"latency_sum_ms,omitempty"`
	LatencyN           int64   `json:"latency_n,omitempty"`
	LatencyP50Ms       float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99Ms       float64 `json:"latency_p99_ms,omitempty"`
	TTFTP50Ms          float64 `json:"ttft_p50_ms,omitempty"`
	Samples            int64   `json:"samples,omitempty"`
}

// counters renders a slice as fed.stats shows it (active_streams apart).
func (p statSlice) counters() record.Counters {
	c := record.Counters{
		TotalRequests:      p.TotalRequests,
		SuccessfulRequests: p.SuccessfulRequests,
		FailedRequests:     p.FailedRequests,
		TotalTokens:        p.TotalTokens,
		Retries:            p.Retries,
		DuplicatesDropped:  p.DuplicatesDropped,
		DispatchFailures:   p.DispatchFailures,
		LatencyP50Ms:       roundMs(p.LatencyP50Ms),
		LatencyP99Ms:       roundMs(p.LatencyP99Ms),
		TTFTP50Ms:          roundMs(p.TTFTP50Ms),
	}
	if p.LatencyN > 0 {
		c.AvgLatencyMs = roundMs(p.LatencySumMs / float64(p.LatencyN))
	}
	return c
}

// mergeSlice is the join of two slices (see the top of this file).
func mergeSlice(a, b statSlice) statSlice {
	out := statSlice{
		TotalRequests:      max(a.TotalRequests, b.TotalRequests),
		SuccessfulRequests: max(a.SuccessfulRequests, b.SuccessfulRequests),
		FailedRequests:     max(a.FailedRequests, b.FailedRequests),
		TotalTokens:        max(a.TotalTokens, b.TotalTokens),
		Retries:            max(a.Retries, b.Retries),
		DuplicatesDropped:  max(a.DuplicatesDropped, b.DuplicatesDropped),
		DispatchFailures:   max(a.DispatchFailures, b.DispatchFailures),
	}
	avg := a
	if b.LatencyN > a.LatencyN || (b.LatencyN == a.LatencyN && b.LatencySumMs > a.LatencySumMs) {
		avg = b
	}
	out.LatencySumMs, out.LatencyN = avg.LatencySumMs, avg.LatencyN
	pct := a
	if pctAfter(b, a) {
		pct = b
	}
	out.LatencyP50Ms, out.LatencyP99Ms, out.TTFTP50Ms, out.Samples = pct.LatencyP50Ms, pct.LatencyP99Ms, pct.TTFTP50Ms, pct.Samples
	return out
}

// pctAfter orders the percentile groups: more samples, then more requests
// behind them, then larger values (any total order would do; this one
// makes every instance pick the same group).
func pctAfter(b, a statSlice) bool {
	switch {
	case b.Samples != a.Samples:
		return b.Samples > a.Samples
	case b.LatencyN != a.LatencyN:
		return b.LatencyN > a.LatencyN
	case b.LatencyP99Ms != a.LatencyP99Ms:
		return b.LatencyP99Ms > a.LatencyP99Ms
	case b.LatencyP50Ms != a.LatencyP50Ms:
		return b.LatencyP50Ms > a.LatencyP50Ms
	default:
		return b.TTFTP50Ms > a.TTFTP50Ms
	}
}

func (p *statSlice) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"total_requests", p.TotalRequests}, {"successful_requests", p.SuccessfulRequests},
		{"failed_requests", p.FailedRequests}, {"total_tokens", p.TotalTokens}, {"retries", p.Retries},
		{"duplicates_dropped", p.DuplicatesDropped}, {"dispatch_failures", p.DispatchFailures},
		{"latency_n", p.LatencyN}, {"samples", p.Samples},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s %d is negative", f.name, f.v)
		}
	}
	if p.Samples > maxSamples {
		return fmt.Errorf("samples %d is over %d", p.Samples, maxSamples)
	}
	if !isFinite(p.LatencySumMs) || p.LatencySumMs < 0 {
		return fmt.Errorf("latency_sum_ms %v must be finite and >= 0", p.LatencySumMs)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"latency_p50_ms", p.LatencyP50Ms}, {"latency_p99_ms", p.LatencyP99Ms}, {"ttft_p50_ms", p.TTFTP50Ms}} {
		if !isFinite(f.v) || f.v < 0 || f.v > record.MaxLatencyMs {
			return fmt.Errorf("%s %v must be a finite number in [0, %d]", f.name, f.v, record.MaxLatencyMs)
		}
	}
	return nil
}

// statsRecord is a fed_health value under a stats.* key: stats.mesh holds
// Mesh and Unplaced, a stats.nodes.<shard> key Nodes, a stats.tenants.<shard>
// key Tenants.
type statsRecord struct {
	Mesh     *statSlice           `json:"mesh,omitempty"`
	Unplaced map[string]int64     `json:"unplaced,omitempty"`
	Nodes    map[string]statSlice `json:"nodes,omitempty"`
	Tenants  map[string]statSlice `json:"tenants,omitempty"`
	// UpdatedAt is when the writer wrote it; informational.
	UpdatedAt time.Time `json:"updated_at"`
}

func (r *statsRecord) empty() bool {
	return r.Mesh == nil && len(r.Unplaced) == 0 && len(r.Nodes) == 0 && len(r.Tenants) == 0
}

// sameStats compares two stored values, UpdatedAt aside; nil is empty.
func sameStats(a, b *statsRecord) bool {
	if a == nil || b == nil {
		return (a == nil || a.empty()) && (b == nil || b.empty())
	}
	if (a.Mesh == nil) != (b.Mesh == nil) || (a.Mesh != nil && *a.Mesh != *b.Mesh) {
		return false
	}
	return maps.Equal(a.Unplaced, b.Unplaced) && maps.Equal(a.Nodes, b.Nodes) && maps.Equal(a.Tenants, b.Tenants)
}

// shardOf spreads node ids and tenant names over the shard keys.
func shardOf(name string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	return int(h.Sum32() % statsShards)
}

func shardSuffix(i int) string { return fmt.Sprintf("%02d", i) }

func statsNodeKey(shard int) string   { return statsNodesPrefix + shardSuffix(shard) }
func statsTenantKey(shard int) string { return statsTenantsPrefix + shardSuffix(shard) }

// statsKeys lists every stats key, in a fixed order.
func statsKeys() []string {
	keys := []string{statsMeshKey}
	for i := range statsShards {
		keys = append(keys, statsNodeKey(i))
	}
	for i := range statsShards {
		keys = append(keys, statsTenantKey(i))
	}
	return keys
}

// statsKind names what a stats key holds: "mesh", "nodes" or "tenants",
// and the shard; ok is false for any other key.
func statsKind(key string) (kind string, shard int, ok bool) {
	if key == statsMeshKey {
		return "mesh", 0, true
	}
	for _, k := range []struct{ prefix, kind string }{{statsNodesPrefix, "nodes"}, {statsTenantsPrefix, "tenants"}} {
		rest, found := strings.CutPrefix(key, k.prefix)
		if !found || len(rest) != 2 {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 || n >= statsShards || shardSuffix(n) != rest {
			return "", 0, false
		}
		return k.kind, n, true
	}
	return "", 0, false
}

// decodeStats decodes a stats value stored under key. Everything in a
// bucket is untrusted: counts must be non-negative, floats finite and in
// range, names valid and in the key's shard, maps bounded.
func decodeStats(key string, data []byte) (statsRecord, error) {
	var r statsRecord
	kind, shard, ok := statsKind(key)
	if !ok {
		return r, fmt.Errorf("fed_health key %q is not a stats key", key)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("stats record %s: %w", key, err)
	}
	bad := func(format string, args ...any) (statsRecord, error) {
		return statsRecord{}, fmt.Errorf("stats record %s: "+format, append([]any{key}, args...)...)
	}
	switch kind {
	case "mesh":
		if len(r.Nodes) > 0 || len(r.Tenants) > 0 {
			return bad("nodes or tenants under the mesh key")
		}
		if r.Mesh != nil {
			if err := r.Mesh.validate(); err != nil {
				return bad("mesh: %w", err)
			}
		}
		if len(r.Unplaced) > maxUnplacedCodes {
			return bad("%d unplaced codes, at most %d", len(r.Unplaced), maxUnplacedCodes)
		}
		for code, v := range r.Unplaced {
			c, err := strconv.Atoi(code)
			if err != nil || c < 100 || c > 999 || strconv.Itoa(c) != code || v < 0 {
				return bad("unplaced %q: %d is not a wire code with a count >= 0", code, v)
			}
		}
	case "nodes":
		if r.Mesh != nil || len(r.Unplaced) > 0 || len(r.Tenants) > 0 {
			return bad("only nodes belong under a nodes key")
		}
		if len(r.Nodes) > maxShardNodes {
			return bad("%d nodes, at most %d", len(r.Nodes), maxShardNodes)
		}
		for id, p := range r.Nodes {
			if err := wire.ValidateID("node_id", id); err != nil {
				return bad("%w", err)
			}
			if shardOf(id) != shard {
				return bad("node %s belongs to shard %s", id, shardSuffix(shardOf(id)))
			}
			if err := p.validate(); err != nil {
				return bad("node %s: %w", id, err)
			}
		}
	case "tenants":
		if r.Mesh != nil || len(r.Unplaced) > 0 || len(r.Nodes) > 0 {
			return bad("only tenants belong under a tenants key")
		}
		if len(r.Tenants) > maxTenants {
			return bad("%d tenants, at most %d", len(r.Tenants), maxTenants)
		}
		for name, p := range r.Tenants {
			if name == "" || len(name) > record.MaxTenantLen {
				return bad("tenant %.64q: empty or longer than %d bytes", name, record.MaxTenantLen)
			}
			if shardOf(name) != shard {
				return bad("tenant %.64q belongs to shard %s", name, shardSuffix(shardOf(name)))
			}
			if err := p.validate(); err != nil {
				return bad("tenant %.64q: %w", name, err)
			}
		}
	}
	return r, nil
}

// storedStats is what this instance last saw of one stats key.
type storedStats struct {
	rec  *statsRecord // nil: absent, deleted or undecodable
	rev  uint64       // revision to Update against; 0: Create
	seen uint64       // newest revision applied, for ordering
}

// peerStats is the stored stats as last seen. Guarded by Service.mu.
type peerStats struct {
	keys  map[string]*storedStats
	ready bool   // seeding done: later values are only remembered
	gen   uint64 // bumped whenever own counters or stored values change
	done  uint64 // gen at the last complete write
	last  time.Time
}

func newPeerStats() peerStats { return peerStats{keys: map[string]*storedStats{}} }

func (p *peerStats) key(k string) *storedStats {
	st := p.keys[k]
	if st == nil {
		st = &storedStats{}
		p.keys[k] = st
	}
	return st
}

func (p *peerStats) rec(k string) *statsRecord {
	if st := p.keys[k]; st != nil {
		return st.rec
	}
	return nil
}

// followStats loads the stored stats (seeding this instance's counters)
// and keeps following them. Called at start before the subscriptions.
func (s *Service) followStats(ctx context.Context) error {
	if err := buckets.FollowKeys(ctx, s.group, s.health, buckets.StatsPrefix+">", s.applyStats); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	s.mu.Lock()
	s.peer.ready = true
	s.mu.Unlock()
	return nil
}

// applyStats takes one stored stats value from the watch.
func (s *Service) applyStats(e jetstream.KeyValueEntry) {
	if buckets.Deleted(e) {
		s.storeStats(e.Key(), nil, e.Revision(), true)
		return
	}
	r, err := decodeStats(e.Key(), e.Value())
	if err != nil {
		s.badRecords.Warn().Err(err).Str("key", e.Key()).Msg("undecodable fed_health stats record ignored; the next write replaces it")
		s.storeStats(e.Key(), nil, e.Revision(), false)
		return
	}
	s.storeStats(e.Key(), &r, e.Revision(), false)
}

// storeStats remembers a stored value (nil when deleted or undecodable) at
// revision rev, unless a newer one is known. Before the instance is ready
// it also seeds its own counters from it.
func (s *Service) storeStats(key string, r *statsRecord, rev uint64, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peer.key(key)
	if rev != 0 {
		if rev <= st.seen {
			return // our own write coming back, or older news
		}
		st.seen = rev
	}
	st.rev = rev
	if deleted {
		st.rev = 0 // Create handles a deleted key
	}
	if !sameStats(st.rec, r) {
		s.peer.gen++
	}
	st.rec = r
	if !s.peer.ready && r != nil {
		s.seedStats(r)
	}
}

// seedStats starts own counters from a stored value. Runs under mu, at
// start only (no event counted yet), for the nodes known by then.
func (s *Service) seedStats(r *statsRecord) {
	if r.Mesh != nil {
		s.mesh.all.seed(*r.Mesh)
	}
	for code, v := range r.Unplaced {
		s.mesh.unplaced[code] = max(s.mesh.unplaced[code], v)
	}
	for id, p := range r.Nodes {
		if n := s.nodes[id]; n != nil {
			n.stats.seed(p)
		}
	}
	for name, p := range r.Tenants {
		if _, known := s.mesh.tenants[name]; !known && len(s.mesh.tenants) >= maxTenants {
			continue // no room: would land on _other
		}
		s.mesh.tenant(name, s.cfg.LatencyWindow).seed(p)
	}
}

// statsView is the merged view fed.stats answers from and the writer stores.
type statsView struct {
	mesh     statSlice
	unplaced map[string]int64
	nodes    map[string]statSlice
	tenants  map[string]statSlice
}

// view merges own counters with the stored values seen. Nodes are the ones
// this instance knows (a forgotten node leaves fed.stats, and the next write
// of its shard drops it); tenants are the union, at most maxTenants (own
// first, then stored ones by name). Runs under mu.
func (s *Service) view() statsView {
	v := statsView{
		mesh:     s.mesh.all.slice(),
		unplaced: maps.Clone(s.mesh.unplaced),
		nodes:    make(map[string]statSlice, len(s.nodes)),
		tenants:  make(map[string]statSlice, len(s.mesh.tenants)),
	}
	if m := s.peer.rec(statsMeshKey); m != nil {
		if m.Mesh != nil {
			v.mesh = mergeSlice(v.mesh, *m.Mesh)
		}
		for code, n := range m.Unplaced {
			v.unplaced[code] = max(v.unplaced[code], n)
		}
	}
	for id, n := range s.nodes {
		own := n.stats.slice()
		if r := s.peer.rec(statsNodeKey(shardOf(id))); r != nil {
			if p, ok := r.Nodes[id]; ok {
				own = mergeSlice(own, p)
			}
		}
		v.nodes[id] = own
	}
	for name, t := range s.mesh.tenants {
		v.tenants[name] = t.slice()
	}
	var extra []string
	for i := range statsShards {
		r := s.peer.rec(statsTenantKey(i))
		if r == nil {
			continue
		}
		for name, p := range r.Tenants {
			if own, ok := v.tenants[name]; ok {
				v.tenants[name] = mergeSlice(own, p)
			} else {
				extra = append(extra, name)
			}
		}
	}
	if len(v.tenants)+len(extra) > maxTenants {
		slices.Sort(extra)
		extra = extra[:max(maxTenants-len(v.tenants), 0)]
	}
	for _, name := range extra {
		v.tenants[name] = s.peer.rec(statsTenantKey(shardOf(name))).Tenants[name]
	}
	return v
}

// records splits a view into the value of every stats key.
func (v *statsView) records() map[string]*statsRecord {
	out := make(map[string]*statsRecord, 1+2*statsShards)
	mesh := v.mesh
	out[statsMeshKey] = &statsRecord{Mesh: &mesh, Unplaced: nilIfEmpty(v.unplaced)}
	for id, p := range v.nodes {
		if p == (statSlice{}) {
			continue // nothing counted: not stored
		}
		k := statsNodeKey(shardOf(id))
		r := out[k]
		if r == nil {
			r = &statsRecord{Nodes: map[string]statSlice{}}
			out[k] = r
		}
		r.Nodes[id] = p
	}
	for name, p := range v.tenants {
		if p == (statSlice{}) {
			continue
		}
		k := statsTenantKey(shardOf(name))
		r := out[k]
		if r == nil {
			r = &statsRecord{Tenants: map[string]statSlice{}}
			out[k] = r
		}
		r.Tenants[name] = p
	}
	return out
}

func nilIfEmpty[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) == 0 {
		return nil
	}
	return m
}

// statsJob is one stats key to write.
type statsJob struct {
	key string
	rec *statsRecord
	rev uint64
}

// statsJobs lists the keys whose merged value differs from the stored one.
// Runs under mu.
func (s *Service) statsJobs() []statsJob {
	v := s.view()
	recs := v.records()
	var jobs []statsJob
	for _, k := range statsKeys() {
		r := recs[k]
		if r == nil {
			r = &statsRecord{}
		}
		st := s.peer.keys[k]
		var stored *statsRecord
		var rev uint64
		if st != nil {
			stored, rev = st.rec, st.rev
		}
		if sameStats(r, stored) && !(stored == nil && rev != 0) {
			continue // nothing new (an undecodable value is replaced even by an empty one)
		}
		jobs = append(jobs, statsJob{key: k, rec: r, rev: rev})
	}
	return jobs
}

// flushStats writes the stats keys that lag, at most once per
// HeartbeatInterval (force: the final flush at stop), and only when own
// counters or stored values changed since the last complete write.
func (s *Service) flushStats(ctx context.Context, now time.Time, force bool) {
	s.mu.Lock()
	if s.peer.gen == s.peer.done || (!force && now.Sub(s.peer.last) < s.cfg.HeartbeatInterval) {
		s.mu.Unlock()
		return
	}
	gen := s.peer.gen
	s.peer.last = now
	jobs := s.statsJobs()
	s.mu.Unlock()

	var (
		writes sync.WaitGroup
		failed atomic.Bool
	)
	sem := make(chan struct{}, s.cfg.WriteConcurrency)
	for _, j := range jobs {
		sem <- struct{}{}
		writes.Go(func() {
			defer func() { <-sem }()
			if !s.writeStats(ctx, j) {
				failed.Store(true)
			}
		})
	}
	writes.Wait()
	if !failed.Load() {
		s.mu.Lock()
		s.peer.done = max(s.peer.done, gen)
		s.mu.Unlock()
	}
}

// writeStats writes one stats key, revision-checked; on a conflict it
// re-reads the key, merges again and retries. It reports whether the
// bucket now holds the merge.
func (s *Service) writeStats(ctx context.Context, j statsJob) bool {
	wctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	for range maxWriteAttempts {
		j.rec.UpdatedAt = time.Now().UTC()
		data, err := json.Marshal(j.rec)
		if err != nil {
			s.log.Error().Err(err).Str("key", j.key).Msg("encode stats record")
			return false
		}
		var rev uint64
		if j.rev == 0 {
			rev, err = s.health.Create(wctx, j.key, data)
		} else {
			rev, err = s.health.Update(wctx, j.key, data, j.rev)
		}
		if err == nil {
			s.mu.Lock()
			st := s.peer.key(j.key)
			if rev > st.seen {
				st.rec, st.rev, st.seen = j.rec, rev, rev
			}
			s.mu.Unlock()
			return true
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Warn().Err(err).Str("key", j.key).Msg("write fed_health stats failed; retrying next interval")
			return false
		}
		// Another instance wrote first: take its value in and merge again.
		e, gerr := s.health.Get(wctx, j.key)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
			s.storeStats(j.key, nil, 0, true)
		case gerr != nil:
			s.log.Warn().Err(gerr).Str("key", j.key).Msg("re-read fed_health stats after conflict")
			return false
		default:
			s.applyStats(e)
		}
		s.mu.Lock()
		next := s.statsJobs()
		s.mu.Unlock()
		idx := slices.IndexFunc(next, func(n statsJob) bool { return n.key == j.key })
		if idx < 0 {
			return true // the stored value already holds everything
		}
		j = next[idx]
	}
	s.log.Warn().Str("key", j.key).Int("attempts", maxWriteAttempts).Msg("fed_health stats write kept conflicting; retrying next interval")
	return false
}
