package tui

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// body collects the lines of a view. A table row remembers its head line,
// so a scrolled view can keep the head of the rows it shows.
type body struct {
	lines  []bodyLine
	width  int
	sort   SortKey
	filter string
	th     theme
	hidden int // rows the filter hid
}

type bodyLine struct {
	text string
	head int // index of the row's table head in lines; -1 for none
}

func (b *body) text(lines ...string) {
	for _, l := range lines {
		b.lines = append(b.lines, bodyLine{text: l, head: -1})
	}
}

// wrapped adds plain free text broken to the width, never cut short,
// each line coloured as class.
func (b *body) wrapped(class, text string) {
	for _, l := range wrap(text, b.width) {
		b.text(b.th(class, l))
	}
}

func (b *body) items(items ...string) { b.text(flow(items, b.width)...) }

func (b *body) title(s string) {
	if len(b.lines) > 0 {
		b.text("")
	}
	b.text(b.th("title", s))
}

func (b *body) table(t *table) {
	b.hidden += t.filter(b.filter)
	if len(t.rows) == 0 && b.filter != "" {
		t.empty = "no rows match the filter"
	}
	head, rows := t.render(b.width, b.sort, b.th)
	at := -1
	if head != "" {
		at = len(b.lines)
		b.lines = append(b.lines, bodyLine{text: head, head: -1})
	}
	for _, r := range rows {
		b.lines = append(b.lines, bodyLine{text: r, head: at})
	}
}

func (b *body) kv(label, value string) string { return b.th("label", label) + " " + value }

// renderBody builds the lines of view v.
func renderBody(d *Data, v View, b *body, now time.Time) {
	switch v {
	case ViewCatalog:
		catalogView(d, b)
	case ViewHealth:
		healthView(d, b, now)
	case ViewRouting:
		routingView(d, b)
	case ViewCircuits:
		circuitsView(d, b, now)
	case ViewStats:
		statsView(d, b)
	case ViewPolicies:
		policiesView(d, b)
	case ViewHelp:
		helpView(b)
	}
	if v != ViewHelp && len(d.Ignored) > 0 {
		b.title("ignored (did not decode)")
		t := &table{cols: []column{{head: "SOURCE", sortBy: noSort}, {head: "COUNT", right: true, sortBy: noSort},
			{head: "LAST REASON", sortBy: noSort, wrap: true}}}
		for _, ig := range d.Ignored {
			t.add(ig.Source, fmt.Sprint(ig.Count), ig.Last)
		}
		b.table(t)
	}
}

func notLoaded(d *Data, b *body) bool {
	if d.Loading == "" {
		return false
	}
	b.text(b.th("dim", d.Loading))
	return true
}

func catalogView(d *Data, b *body) {
	if notLoaded(d, b) {
		return
	}
	var regions record.Regions
	if e := d.config(record.ConfigKeyRegions); e != nil {
		regions = e.Regions
	}
	t := &table{empty: "no nodes registered (fed_catalog is empty)", cols: []column{
		{head: "NODE", sortBy: SortNode}, {head: "REGION", sortBy: SortRegion}, {head: "ZONE", prio: 4, sortBy: noSort},
		{head: "GPU", prio: 1, sortBy: noSort}, {head: "CLEARANCE", sortBy: noSort}, {head: "COST", right: true, sortBy: noSort},
		{head: "MAX", right: true, prio: 2, sortBy: noSort}, {head: "LABELS", prio: 3, sortBy: noSort},
		{head: "MODELS", prio: 1, sortBy: noSort, wrap: true}, {head: "AGENT", prio: 5, sortBy: noSort},
		{head: "REGISTERED", right: true, prio: 5, sortBy: noSort},
	}}
	marks := false
	type modelInfo struct {
		m     record.Model
		nodes []string
	}
	models := map[string]*modelInfo{}
	perRegion := map[string]int{}
	for _, n := range sortNodes(d.Nodes, b.sort) {
		c := n.Catalog
		if c == nil {
			continue
		}
		perRegion[c.Region]++
		clearance := n.Clearance
		if n.Capped {
			clearance += "*"
			marks = true
		}
		cost := fmt.Sprintf("%.2f", c.Cost)
		if c.Cost == 0 { // DESIGN §6.1: the region's cost, else 0.5
			eff := 0.5
			if r, ok := regions[c.Region]; ok && r.Cost != nil {
				eff = *r.Cost
			}
			cost, marks = fmt.Sprintf("%.2f*", eff), true
		}
		var ids, labels []string
		for _, m := range c.Models {
			ids = append(ids, m.ModelID)
			mi := models[m.ModelID]
			if mi == nil {
				mi = &modelInfo{m: m}
				models[m.ModelID] = mi
			}
			mi.nodes = append(mi.nodes, c.NodeID)
		}
		for _, k := range sortedKeys(c.Labels) {
			labels = append(labels, k+"="+c.Labels[k])
		}
		t.add(c.NodeID, c.Region, dash(c.Zone), yesNo(c.GPU), clearance, cost, fmt.Sprint(c.MaxConcurrency),
			dash(strings.Join(labels, ",")), dash(strings.Join(ids, ",")), dash(c.AgentVersion), age(d.Taken, c.RegisteredAt))
	}
	b.table(t)
	if marks {
		b.wrapped("dim", "* set by fed_config regions (privacy cap; cost of a node registered with cost 0, else 0.50)")
	}

	if len(models) > 0 {
		b.title("models")
		mt := &table{cols: []column{{head: "MODEL", sortBy: noSort}, {head: "CAPABILITIES", sortBy: noSort},
			{head: "PARAMS", prio: 2, sortBy: noSort}, {head: "QUANT", prio: 3, sortBy: noSort},
			{head: "NAME", prio: 4, sortBy: noSort}, {head: "NODES", sortBy: noSort, wrap: true}}}
		for _, id := range sortedKeys(models) {
			mi := models[id]
			sort.Strings(mi.nodes)
			mt.add(id, dash(strings.Join(mi.m.Capabilities, ",")), dash(mi.m.Parameters), dash(mi.m.Quantization),
				dash(mi.m.Name), strings.Join(mi.nodes, ","))
		}
		b.table(mt)
	}

	names := map[string]bool{}
	for r := range perRegion {
		names[r] = true
	}
	for r := range regions {
		names[r] = true
	}
	if len(names) > 0 {
		b.title("regions")
		rt := &table{cols: []column{{head: "REGION", sortBy: noSort}, {head: "NODES", right: true, sortBy: noSort},
			{head: "PRIVACY CAP", sortBy: noSort}, {head: "COST", right: true, sortBy: noSort}}}
		for _, r := range sortedKeys(names) {
			privacy, cost := "-", "-"
			if reg, ok := regions[r]; ok {
				if reg.Privacy != nil {
					privacy = reg.Privacy.String()
				}
				if reg.Cost != nil {
					cost = fmt.Sprintf("%.2f", *reg.Cost)
				}
			}
			rt.add(r, fmt.Sprint(perRegion[r]), privacy, cost)
		}
		b.table(rt)
	}
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

func healthView(d *Data, b *body, now time.Time) {
	if notLoaded(d, b) {
		return
	}
	t := &table{empty: "no nodes (fed_catalog and fed_health are empty)", cols: []column{
		{head: "NODE", sortBy: SortNode}, {head: "STATE", sortBy: SortState},
		{head: "P50 MS", right: true, sortBy: SortP50}, {head: "P99 MS", right: true, sortBy: SortP99},
		{head: "IN FLIGHT", right: true, sortBy: SortInFlight}, {head: "RUN/WAIT", right: true, prio: 1, sortBy: noSort},
		{head: "QUEUE", right: true, prio: 2, sortBy: noSort}, {head: "HEARTBEAT", right: true, prio: 2, sortBy: noSort},
		{head: "KV", right: true, prio: 3, sortBy: noSort}, {head: "SUCCESS", right: true, prio: 3, sortBy: noSort},
		{head: "TOK/S", right: true, prio: 3, sortBy: SortThroughput}, {head: "PREFIX", right: true, prio: 4, sortBy: noSort},
		{head: "SAMPLES", right: true, prio: 4, sortBy: noSort}, {head: "GPU", right: true, prio: 4, sortBy: noSort},
		{head: "STREAMS", right: true, prio: 5, sortBy: noSort}, {head: "DRAIN", prio: 5, sortBy: noSort},
		{head: "REGISTERED", prio: 6, sortBy: noSort},
	}}
	for _, n := range sortNodes(d.Nodes, b.sort) {
		h := n.Health
		state := stateOf(&n)
		p50, p99, success, samples := "-", "-", "-", "-"
		if h != nil {
			p50, p99, success, samples = ms(h.LatencyP50Ms), ms(h.LatencyP99Ms), pct(h.SuccessRate), fmt.Sprint(h.Samples)
		}
		l := loadOf(&n, now)
		t.addClassed([]string{n.ID, state, p50, p99, l.inFlight, l.runWait, l.queue, l.heartbeat, l.kv, success,
			l.tps, l.prefix, samples, l.gpu, l.streams, l.drain, yesNo(n.Catalog != nil)}, []string{"", "state:" + state})
	}
	b.table(t)
	for _, n := range d.Nodes {
		if loadOf(&n, now).runWait != "-" {
			b.wrapped("dim", "RUN/WAIT, KV, PREFIX: the model server's own load (requests in its batch / waiting, KV cache use, prefix-cache hits)")
			break
		}
	}

	b.title("per model")
	b.wrapped("dim", "fed_health's window of each node's models; where it has none, what this top saw in fed.outcome.* since "+
		d.Since.Format("15:04:05"))
	mt := &table{empty: "no model statistics yet", cols: []column{
		{head: "NODE", sortBy: noSort}, {head: "MODEL", sortBy: noSort},
		{head: "P50 MS", right: true, sortBy: noSort}, {head: "P99 MS", right: true, sortBy: noSort},
		{head: "TTFT MS", right: true, sortBy: noSort}, {head: "TPOT MS", right: true, sortBy: noSort},
		{head: "SAMPLES", right: true, prio: 1, sortBy: noSort}, {head: "CAP", prio: 2, sortBy: noSort},
		{head: "FAILS", right: true, prio: 2, sortBy: noSort}, {head: "TTFT P99", right: true, prio: 3, sortBy: noSort},
		{head: "TPOT P99", right: true, prio: 3, sortBy: noSort}, {head: "TOK/S", right: true, prio: 3, sortBy: noSort},
		{head: "FROM", prio: 4, sortBy: noSort},
	}}
	fromHealth := map[modelKey]bool{}
	for _, n := range d.Nodes {
		if n.Health == nil {
			continue
		}
		for _, k := range sortedKeys(n.Health.Models) {
			m := n.Health.Models[k]
			capability, model, ok := strings.Cut(k, "/")
			if !ok {
				capability, model = "-", k
			}
			fromHealth[modelKey{n.ID, model}] = true
			mt.add(n.ID, model, ms(m.LatencyP50Ms), ms(m.LatencyP99Ms), ms(m.TTFTP50Ms), ms(m.TPOTP50Ms),
				fmt.Sprint(m.Samples), capability, "-", ms(m.TTFTP99Ms), ms(m.TPOTP99Ms), num(m.ThroughputTPS), "fed_health")
		}
	}
	for _, m := range d.Models {
		if fromHealth[modelKey{m.Node, m.Model}] {
			continue
		}
		mt.add(m.Node, m.Model, ms(m.P50Ms), ms(m.P99Ms), ms(m.TTFTP50Ms), ms(m.TPOTP50Ms), fmt.Sprint(m.Samples),
			"-", fmt.Sprint(m.Failures), "-", "-", "-", "outcomes")
	}
	b.table(mt)
}

// load is what the node agent reports of its model server, from its
// latest heartbeat as this top heard it, else as fed_health stored it.
type load struct {
	inFlight, queue, heartbeat, tps, gpu, streams, drain string
	runWait, kv, prefix                                  string // the model server's own
}

func loadOf(n *NodeData, now time.Time) load {
	var hb record.Heartbeat
	var at time.Time
	switch {
	case n.Heartbeat != nil:
		hb, at = *n.Heartbeat, n.HeartbeatAt
	case n.Health != nil:
		h := n.Health
		hb = record.Heartbeat{InFlight: h.InFlight, QueueDepth: h.QueueDepth, GPUUtilization: h.GPUUtilization,
			ThroughputTPS: h.ThroughputTPS, Draining: h.Draining, Server: h.Server}
		at = h.LastHeartbeat
	default:
		return load{"-", "-", "-", "-", "-", "-", "-", "-", "-", "-"}
	}
	l := load{inFlight: fmt.Sprint(hb.InFlight), queue: fmt.Sprint(hb.QueueDepth), heartbeat: age(now, at),
		tps: num(hb.ThroughputTPS), gpu: "-", streams: "-", drain: "-", runWait: "-", kv: "-", prefix: "-"}
	if srv := hb.Server; srv != nil {
		l.runWait = fmt.Sprintf("%d/%d", srv.Running, srv.Waiting)
		l.kv, l.prefix = pct(srv.KVUsage), pct(srv.PrefixHitRate)
	}
	if mc := maxConcurrency(n); mc > 0 {
		l.inFlight += fmt.Sprintf("/%d", mc)
	}
	if hb.GPUUtilization > 0 {
		l.gpu = pct(hb.GPUUtilization)
	}
	if n.Heartbeat != nil {
		l.streams = fmt.Sprint(hb.ActiveStreams)
	}
	if hb.Draining {
		l.drain = "draining"
	}
	return l
}

// maxConcurrency is the node's limit as routers see it: the heartbeat's,
// else the catalog's.
func maxConcurrency(n *NodeData) int {
	if n.Heartbeat != nil && n.Heartbeat.MaxConcurrency > 0 {
		return n.Heartbeat.MaxConcurrency
	}
	if n.Health != nil && n.Health.MaxConcurrency > 0 {
		return n.Health.MaxConcurrency
	}
	if n.Catalog != nil {
		return n.Catalog.MaxConcurrency
	}
	return 0
}

func routingView(d *Data, b *body) {
	b.items(b.th("dim", "fed.router.decisions joined with fed.outcome.* and fed.router.unplaced"),
		b.th("dim", "since "+d.Since.Format("15:04:05")), b.th("dim", fmt.Sprintf("%d rows", len(d.Routes))))
	// NODE, SCORE, DECIDED BY and OUTCOME answer "why did my request go to
	// that node": always shown; then the request and its attempts.
	t := &table{empty: "no decisions yet (routers publish them as they place requests)", cols: []column{
		{head: "TIME", prio: 4, sortBy: noSort}, {head: "REQUEST", prio: 1, sortBy: noSort},
		{head: "CAP", prio: 3, sortBy: noSort}, {head: "MODEL", prio: 2, sortBy: noSort},
		{head: "TENANT", prio: 3, sortBy: noSort}, {head: "NODE", sortBy: noSort},
		{head: "SCORE", right: true, sortBy: noSort}, {head: "DECIDED BY", sortBy: noSort},
		{head: "ATT", right: true, prio: 1, sortBy: noSort}, {head: "OUTCOME", sortBy: noSort},
		{head: "STRATEGY", prio: 5, sortBy: noSort}, {head: "QUEUED", right: true, prio: 5, sortBy: noSort},
		{head: "TAKEOVER", prio: 4, sortBy: noSort}, {head: "PRED TTFT", right: true, prio: 5, sortBy: noSort},
		{head: "PREFIX", right: true, prio: 5, sortBy: noSort}, {head: "ROUTER", prio: 6, sortBy: noSort},
	}}
	for i := range d.Routes {
		r := &d.Routes[i]
		out, class := outcomeCell(r)
		classes := make([]string, len(t.cols))
		classes[9] = class
		if x := r.Decision; x != nil {
			decided := x.DecidedBy
			if decided == "" {
				decided = "only" // the only candidate: nothing to separate
			}
			queued := "-"
			if x.QueuedMs > 0 {
				queued = ms(x.QueuedMs)
			}
			prefix := "-"
			if x.PrefixMatch > 0 {
				prefix = pct(x.PrefixMatch)
			}
			t.addClassed([]string{x.Time.Format("15:04:05"), dash(x.RequestID), dash(x.Capability), dash(x.Model),
				dash(x.Tenant), x.Node, fmt.Sprintf("%.3f", x.Score), decided, fmt.Sprint(x.Attempts), out,
				dash(x.Strategy), queued, dash(x.Takeover), ms(x.PredictedTTFTMs), prefix, dash(r.Router)}, classes)
			continue
		}
		u := r.Unplaced
		t.addClassed([]string{u.Time.Format("15:04:05"), dash(u.RequestID), dash(u.Capability), dash(u.Model),
			dash(u.Tenant), "-", "-", "-", fmt.Sprint(u.Attempts), out, "-", "-", "-", "-", "-", "-"}, classes)
	}
	b.table(t)
}

// outcomeCell says how the request ended and its colour class.
func outcomeCell(r *Route) (string, string) {
	switch {
	case r.Outcome != nil && r.Outcome.OK:
		return "ok " + ms(r.Outcome.LatencyMs) + "ms", "ok"
	case r.Outcome != nil && r.Outcome.Silent:
		return fmt.Sprintf("lost %d", r.Outcome.Code), "bad" // the node sent no final: someone else answers
	case r.Outcome != nil:
		return fmt.Sprintf("err %d", r.Outcome.Code), "bad"
	case r.Unplaced != nil:
		return fmt.Sprintf("unplaced %d", r.Unplaced.Code), "bad"
	}
	return "-", ""
}

func circuitsView(d *Data, b *body, now time.Time) {
	if notLoaded(d, b) {
		return
	}
	b.items(b.th("dim", fmt.Sprintf("open → half_open after %s", dur(d.ResetTimeout))),
		b.th("dim", fmt.Sprintf("half_open → closed after %d successful requests, → open on one failure", d.HalfOpenSuccesses)))
	t := &table{empty: "no nodes", cols: []column{
		{head: "NODE", sortBy: SortNode}, {head: "CIRCUIT", sortBy: noSort}, {head: "FAILS", right: true, sortBy: SortFailures},
		{head: "HALF-OPEN IN", right: true, sortBy: noSort}, {head: "PROBE", sortBy: noSort},
		{head: "STATE", prio: 1, sortBy: SortState}, {head: "SUCCESSES", right: true, prio: 2, sortBy: noSort},
		{head: "OPENED", right: true, prio: 2, sortBy: noSort}, {head: "UNFINISHED", right: true, prio: 3, sortBy: noSort},
		{head: "DRAIN", prio: 4, sortBy: noSort},
	}}
	for _, n := range sortNodes(d.Nodes, b.sort) {
		h := n.Health
		circuit, state := circuitOf(&n), stateOf(&n)
		classes := []string{"", "circuit:" + circuit, "", "", "", "state:" + state}
		if h == nil {
			t.addClassed([]string{n.ID, circuit, "-", "-", "-", state, "-", "-", fmt.Sprint(n.Unfinished), "-"}, classes)
			continue
		}
		in, probe, succ := "-", "-", fmt.Sprint(h.ConsecutiveSuccess)
		switch circuit {
		case record.CircuitOpen:
			if !h.CircuitOpenedAt.IsZero() {
				if left := h.CircuitOpenedAt.Add(d.ResetTimeout).Sub(now); left > 0 {
					in = dur(left)
				} else {
					in = "due"
				}
			}
		case record.CircuitHalfOpen:
			probe = yesNo(n.ProbeInFlight)
			succ = fmt.Sprintf("%d/%d", h.ConsecutiveSuccess, d.HalfOpenSuccesses)
		}
		opened := "-"
		if circuit != record.CircuitClosed {
			opened = age(now, h.CircuitOpenedAt)
		}
		drain := "-"
		if h.Draining {
			drain = "draining"
		}
		t.addClassed([]string{n.ID, circuit, fmt.Sprint(h.ConsecutiveFailures), in, probe, state, succ, opened,
			fmt.Sprint(n.Unfinished), drain}, classes)
	}
	b.table(t)
}

const sparkWidth = 16

func statsView(d *Data, b *body) {
	s := &d.Stats
	if s.Err != "" {
		b.wrapped("error", "fed.stats "+s.ErrAt.Format("15:04:05")+": "+s.Err)
	}
	if !s.Have {
		b.text(b.th("dim", "no fed.stats answer yet"))
		return
	}
	st := &s.Stats
	unplaced := fmt.Sprint(unplacedTotal(st.Unplaced))
	if len(st.Unplaced) > 0 {
		var codes []string
		for _, c := range sortedKeys(st.Unplaced) {
			codes = append(codes, fmt.Sprintf("%s:%d", c, st.Unplaced[c]))
		}
		unplaced += " (" + strings.Join(codes, " ") + ")"
	}
	r, ok := s.Overall.LastRate()
	b.items(b.kv("mesh", b.th("mesh:"+st.State, dash(st.State))), b.kv("requests", fmt.Sprint(st.TotalRequests)),
		b.kv("ok", fmt.Sprint(st.SuccessfulRequests)), b.kv("failed", fmt.Sprint(st.FailedRequests)),
		b.kv("req/s", rate(r, ok)), b.kv("tokens", fmt.Sprint(st.TotalTokens)),
		b.kv("retries", fmt.Sprint(st.Retries)), b.kv("dispatch failures", fmt.Sprint(st.DispatchFailures)),
		b.kv("unplaced", unplaced), b.kv("duplicates", fmt.Sprint(st.DuplicatesDropped)),
		b.kv("active streams", fmt.Sprint(st.ActiveStreams)),
		b.kv("latency p50", msUnit(st.LatencyP50Ms)), b.kv("p99", msUnit(st.LatencyP99Ms)),
		b.kv("avg", msUnit(st.AvgLatencyMs)), b.kv("ttft p50", msUnit(st.TTFTP50Ms)))
	b.items(b.kv("req/s", sparkline(s.Overall.Rate, 2*sparkWidth)), b.kv("p99 ms", sparkline(s.Overall.P99, 2*sparkWidth)),
		b.th("dim", fmt.Sprintf("a point per stats event, a zero per quiet interval, since %s", d.Since.Format("15:04:05"))),
		// health publishes only changes: say how old the counters are
		b.th("dim", "last stats "+s.At.Format("15:04:05")))

	b.title("per node")
	nt := &table{empty: "no node has served a request", cols: statsCols("NODE", SortNode)}
	for _, n := range sortNodes(d.Nodes, b.sort) {
		if n.Counters == nil {
			continue
		}
		nt.add(statsRow(n.ID, *n.Counters, s.Nodes[n.ID])...)
	}
	b.table(nt)

	b.title("per tenant")
	tt := &table{empty: "no tenant has sent a request", cols: statsCols("TENANT", noSort)}
	names := sortedKeys(st.Tenants)
	sort.SliceStable(names, func(i, j int) bool {
		return st.Tenants[names[i]].TotalRequests > st.Tenants[names[j]].TotalRequests
	})
	for _, name := range names {
		tt.add(statsRow(name, st.Tenants[name], s.Tenants[name])...)
	}
	b.table(tt)
}

func statsCols(first string, sortBy SortKey) []column {
	return []column{
		{head: first, sortBy: sortBy}, {head: "REQS", right: true, sortBy: SortRequests},
		{head: "FAILS", right: true, sortBy: SortFailures}, {head: "REQ/S", right: true, sortBy: noSort},
		{head: "P99 MS", right: true, sortBy: noSort}, {head: "REQ/S TREND", prio: 1, sortBy: noSort},
		{head: "P99 TREND", prio: 2, sortBy: noSort}, {head: "OK", right: true, prio: 3, sortBy: noSort},
		{head: "P50 MS", right: true, prio: 3, sortBy: noSort}, {head: "TTFT MS", right: true, prio: 4, sortBy: noSort},
		{head: "TOKENS", right: true, prio: 4, sortBy: noSort}, {head: "RETRIES", right: true, prio: 5, sortBy: noSort},
	}
}

func statsRow(name string, c record.Counters, s Series) []string {
	r, ok := s.LastRate()
	return []string{name, fmt.Sprint(c.TotalRequests), fmt.Sprint(c.FailedRequests), rate(r, ok), ms(c.LatencyP99Ms),
		sparkline(s.Rate, sparkWidth), sparkline(s.P99, sparkWidth), fmt.Sprint(c.SuccessfulRequests),
		ms(c.LatencyP50Ms), ms(c.TTFTP50Ms), fmt.Sprint(c.TotalTokens), fmt.Sprint(c.Retries)}
}

func unplacedTotal(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func policiesView(d *Data, b *body) {
	if notLoaded(d, b) {
		return
	}
	bases := map[string]string{
		record.ConfigKeyPolicy:  "their base policy",
		record.ConfigKeyRegions: "no region rules",
		record.ConfigKeyTenants: "no tenant limits",
	}
	for _, e := range d.Config {
		b.title(e.Key)
		configStatus(&e, b, bases[e.Key])
		switch e.Key {
		case record.ConfigKeyPolicy:
			policyTable(&e.Policy, b)
		case record.ConfigKeyRegions:
			regionsTable(d, e.Regions, b)
		case record.ConfigKeyTenants:
			tenantsTable(d, e.Tenants, b)
		default:
			b.wrapped("", "value "+e.Value)
		}
	}
}

// configStatus says which value of a fed_config key routers apply, and
// the last value they refused with the reason.
func configStatus(e *ConfigEntry, b *body, base string) {
	when := func(rev uint64, t time.Time) string { return fmt.Sprintf("rev %d (%s)", rev, t.Format("15:04:05")) }
	switch {
	case !e.Known:
		b.text(b.th("dim", when(e.Revision, e.Updated)+": routers do not read this key"))
	case !e.Present && e.Revision == 0:
		b.text(b.th("dim", "not set: routers apply "+base))
	case !e.Present:
		b.text(b.th("dim", when(e.Revision, e.Updated)+" deleted: routers apply "+base))
	case e.Valid:
		b.text(b.th("ok", when(e.Revision, e.Updated)+" in force"))
	default:
		keep := base
		if e.InForceRev > 0 {
			keep = fmt.Sprintf("rev %d", e.InForceRev)
		}
		b.text(b.th("error", when(e.Revision, e.Updated)+" REJECTED: routers keep "+keep))
	}
	if r := e.Rejected; r != nil {
		b.wrapped("error", "last rejected "+when(r.Revision, r.At)+": "+r.Reason)
		b.wrapped("", "rejected value "+r.Value)
	}
}

func policyTable(p *record.Policy, b *body) {
	def := record.DefaultPolicy()
	t := &table{cols: []column{{head: "FIELD", sortBy: noSort}, {head: "IN FORCE", sortBy: noSort},
		{head: "DEFAULT", prio: 1, sortBy: noSort}}}
	f := func(v float64) string { return fmt.Sprint(v) }
	for _, r := range [][3]string{
		{"weights.health", f(p.Weights.Health), f(def.Weights.Health)},
		{"weights.latency", f(p.Weights.Latency), f(def.Weights.Latency)},
		{"weights.privacy", f(p.Weights.Privacy), f(def.Weights.Privacy)},
		{"weights.locality", f(p.Weights.Locality), f(def.Weights.Locality)},
		{"weights.cost", f(p.Weights.Cost), f(def.Weights.Cost)},
		{"weights.load", f(p.Weights.Load), f(def.Weights.Load)},
		{"strategy", p.Strategy, def.Strategy},
		{"min_score", f(p.MinScore), f(def.MinScore)},
		{"max_candidates", fmt.Sprint(p.MaxCandidates), fmt.Sprint(def.MaxCandidates)},
		{"max_retries", fmt.Sprint(p.MaxRetries), fmt.Sprint(def.MaxRetries)},
		{"retry_delay_ms", fmt.Sprint(p.RetryDelayMs), fmt.Sprint(def.RetryDelayMs)},
		{"ack_timeout_ms", fmt.Sprint(p.AckTimeoutMs), fmt.Sprint(def.AckTimeoutMs)},
		{"max_queue_ms", fmt.Sprint(p.MaxQueueMs), fmt.Sprint(def.MaxQueueMs)},
	} {
		val := r[1]
		if r[1] != r[2] {
			val += " *" // differs from the default
		}
		t.add(r[0], val, r[2])
	}
	b.table(t)
}

func regionsTable(d *Data, regions record.Regions, b *body) {
	nodes := map[string]int{}
	for _, n := range d.Nodes {
		if n.Catalog != nil {
			nodes[n.Catalog.Region]++
		}
	}
	t := &table{empty: "no regions in force: node clearances and costs apply as registered",
		cols: []column{{head: "REGION", sortBy: noSort}, {head: "PRIVACY", sortBy: noSort},
			{head: "COST", right: true, sortBy: noSort}, {head: "NODES", right: true, prio: 1, sortBy: noSort}}}
	for _, name := range sortedKeys(regions) {
		r := regions[name]
		privacy, cost := "-", "-"
		if r.Privacy != nil {
			privacy = r.Privacy.String()
		}
		if r.Cost != nil {
			cost = fmt.Sprintf("%.2f", *r.Cost)
		}
		t.add(name, privacy, cost, fmt.Sprint(nodes[name]))
	}
	b.table(t)
}

func tenantsTable(d *Data, tenants record.Tenants, b *body) {
	t := &table{empty: "no tenant limits in force: every tenant is unlimited",
		cols: []column{{head: "TENANT", sortBy: noSort}, {head: "REQ/S LIMIT", right: true, sortBy: noSort},
			{head: "BURST", right: true, sortBy: noSort}, {head: "REQS", right: true, prio: 1, sortBy: noSort},
			{head: "FAILS", right: true, prio: 1, sortBy: noSort}}}
	for _, name := range sortedKeys(tenants) {
		tn := tenants[name]
		limit, burst := "unlimited", "-"
		if tn.RequestsPerSecond > 0 {
			limit = fmt.Sprint(tn.RequestsPerSecond)
			burst = fmt.Sprint(tn.Burst)
			if tn.Burst == 0 {
				burst = fmt.Sprint(int(math.Ceil(tn.RequestsPerSecond)))
			}
		}
		reqs, fails := "-", "-"
		if c, ok := d.Stats.Stats.Tenants[name]; ok && d.Stats.Have {
			reqs, fails = fmt.Sprint(c.TotalRequests), fmt.Sprint(c.FailedRequests)
		}
		t.add(name, limit, burst, reqs, fails)
	}
	b.table(t)
}

// helpKeys is every key of the live view and what it does (the Help view).
var helpKeys = [][2]string{
	{"1-7", "show view: 1 Catalog, 2 Health, 3 Routing, 4 Circuits, 5 Stats, 6 Policies, 7 Help"},
	{"tab / shift+tab", "next / previous view"},
	{"→ / ←", "next / previous view"},
	{"↑ / ↓  (k / j)", "scroll one row"},
	{"pgup / pgdown  (ctrl+u / ctrl+d)", "scroll one page"},
	{"home / end  (g / G)", "first / last row"},
	{"/", "filter rows: type, enter keeps the filter, esc clears it"},
	{"s", "next sort column of the node tables (node, region, state, p50, p99, inflight, tps, requests, failures)"},
	{"p / space", "pause the display (data keeps coming in)"},
	{"? / h", "help; again to go back"},
	{"esc", "clear the filter, leave help"},
	{"q / ctrl+c", "quit"},
}

func helpView(b *body) {
	t := &table{cols: []column{{head: "KEY", sortBy: noSort}, {head: "ACTION", sortBy: noSort, wrap: true}}}
	for _, k := range helpKeys {
		t.add(k[0], k[1])
	}
	b.table(t)
	b.title("views")
	for _, l := range []string{
		"Catalog   fed_catalog: nodes, models, regions, clearance, cost, labels",
		"Health    fed_health: state, p50/p99, load; per model from fed.outcome.*: p50/p99, TTFT, TPOT",
		"Routing   live tail of fed.router.decisions with each request's outcome",
		"Circuits  circuit, failures, time to half-open, probe request in flight",
		"Stats     fed.stats overall, per node, per tenant; req/s and p99 sparklines",
		"Policies  fed_config router.policy, regions, tenants as routers read them",
	} {
		b.wrapped("", l)
	}
	b.title("notes")
	b.wrapped("", "- means no data. A narrow terminal drops low-priority columns. fedmesh top --once --view NAME prints one view as plain text.")
}
