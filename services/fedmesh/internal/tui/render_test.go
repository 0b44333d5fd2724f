package tui

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/ansi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// rowOf returns the line of frame that starts with prefix.
func rowOf(t *testing.T, frame, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(frame, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("no line starting with %q in\n%s", prefix, frame)
	return ""
}

// rowWith returns the line of frame that contains every part.
func rowWith(t *testing.T, frame string, parts ...string) string {
	t.Helper()
next:
	for _, l := range strings.Split(frame, "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return l
	}
	t.Fatalf("no line with %q in\n%s", parts, frame)
	return ""
}

// viewWants is what each view must show of the fixture, whatever the
// width: the columns that matter and the rows' key cells.
var viewWants = map[View]struct {
	heads []string
	rows  [][]string // each: cells that must share one line
	text  []string
}{
	ViewCatalog: {
		heads: []string{"NODE", "REGION", "CLEARANCE", "COST", "GPU", "MODELS"},
		rows: [][]string{{nodeUS, "us-west", "yes", "internal", "0.60"}, {nodeEU, "eu-west", "internal*", "0.80"},
			{nodeAP, "ap-south", "no", "0.30*"}, {"qwen-coder-7b", "code,generate"}},
		text: []string{"set by fed_config regions"},
	},
	ViewHealth: {
		heads: []string{"NODE", "STATE", "P50 MS", "P99 MS", "IN FLIGHT", "TTFT MS", "TPOT MS"},
		rows: [][]string{{nodeUS, "healthy", "45", "230", "4/16"}, {nodeEU, "degraded", "1500", "2600", "0/16", "5/2"},
			{nodeAP, "unhealthy", "800", "9100"}, {nodeUS, "llama-3-8b", "120", "20", "10"},
			{nodeEU, "bge-small", "31", "77", "12", "3.5"}},
	},
	ViewRouting: {
		heads: []string{"REQUEST", "NODE", "SCORE", "DECIDED BY", "ATT", "OUTCOME"},
		rows: [][]string{{"req-ok", nodeUS, "1.065", "latency", "ok 120ms"}, {"req-probe", nodeEU, "0.701", "health"},
			{"req-fail", nodeUS, "only", "err 500"}, {"req-lost", "unplaced 503"}},
	},
	ViewCircuits: {
		heads: []string{"NODE", "CIRCUIT", "FAILS", "HALF-OPEN IN", "PROBE"},
		rows:  [][]string{{nodeUS, "closed"}, {nodeEU, "half_open", "yes"}, {nodeAP, "open", " 5 ", "20s"}},
	},
	ViewStats: {
		heads: []string{"NODE", "TENANT", "REQS", "FAILS", "REQ/S", "P99 MS"},
		rows: [][]string{{nodeUS, "100", "20", "250"}, {nodeAP, "15", "9", "0.0", "9100"}, {"acme", "90", "20"},
			{"beta", "30", "9"}},
		text: []string{"requests 120", "unplaced 5 (403:1 503:4)", "req/s 20"},
	},
	ViewPolicies: {
		heads: []string{"FIELD", "IN FORCE", "REGION", "PRIVACY", "TENANT", "REQ/S LIMIT"},
		rows: [][]string{{"strategy", "round_robin"}, {"eu-west", "internal"}, {"ap-south", "0.30"},
			{"acme", "5", "90"}, {"*", "100", "200"}},
		text: []string{"REJECTED: routers keep rev 1", badPolicyReason, "rejected value " + badPolicy},
	},
	ViewHelp: {heads: []string{"KEY", "ACTION"}, rows: [][]string{{"tab / shift+tab"}, {"/", "filter"}, {"?", "help"}}},
}

func TestTUIRenderEveryViewAtEveryWidth(t *testing.T) {
	now := time.Now()
	d := newMeshFixture(now).data(now)
	for v := range numViews {
		for _, size := range []struct{ w, h int }{{0, 0}, {200, 60}, {80, 24}} {
			t.Run(v.String()+"/"+sizeName(size.w, size.h), func(t *testing.T) {
				want := viewWants[v]
				f := frame{view: v, width: size.w, now: now, th: plainTheme}
				out, _ := f.render(&d)
				assert.Contains(t, out, fmt.Sprintf("[%d %s]", v+1, v.Title()), "the tab bar marks the view")
				assert.NotContains(t, out, "…", "cells are never cut short")
				for _, h := range want.heads {
					assert.Regexp(t, `(^|\s)`+regexp.QuoteMeta(h)+`(▼)?(\s|$)`, out, "column %s", h)
				}
				for _, cells := range want.rows {
					rowWith(t, out, cells...)
				}
				for _, s := range want.text {
					assert.Contains(t, strings.Join(strings.Fields(out), " "), s)
				}
				if size.w > 0 {
					b := &body{width: size.w, sort: SortNode, th: plainTheme}
					renderBody(&d, v, b, now)
					for _, l := range b.lines {
						assert.LessOrEqual(t, ansi.StringWidth(l.text), size.w, "a line the layout did not fit: %q", l.text)
					}
				}
			})
		}
	}
}

// Issue 17: "why did my request go to that node" must be answerable at 80
// columns with real ids (22-character NUIDs, long node and model names):
// NODE, SCORE, DECIDED BY and OUTCOME always stay, then REQUEST and ATT;
// what goes is the less important columns, from the least important end.
func TestTUIRoutingKeepsTheWhyWhenNarrow(t *testing.T) {
	s := newState(t0)
	var ds []record.Decision
	for i, node := range []string{"us-west-gpu-1", "ap-south-cpu-1"} {
		d := record.Decision{RequestID: fmt.Sprintf("QsmH1lu0ShVS7IJGsrWb%02d", i), Capability: wire.CapGenerate,
			Model: "qwen2.5-coder-32b-instruct", Tenant: "acme-research", Node: node, Score: 1.065, DecidedBy: "latency",
			Strategy: record.StrategyLeastLatency, Attempts: 2, Takeover: "eu-west-gpu-2", Time: t0}
		ds = append(ds, d)
		s.applyOutcome(record.Outcome{Kind: record.OutcomeCompleted, NodeID: node, RequestID: d.RequestID, OK: i == 0,
			Code: map[bool]int{true: 0, false: 503}[i == 0], LatencyMs: 1234, Time: t0})
	}
	s.applyDecisions(record.Decisions{Router: "router-7f3a", Decisions: ds}, t0)
	d := s.snapshot(t0)
	for _, tc := range []struct {
		width       int
		shown, gone []string
	}{
		{80, []string{"REQUEST", "NODE", "SCORE", "DECIDED BY", "ATT", "OUTCOME"}, []string{"ROUTER", "STRATEGY", "TIME"}},
		{60, []string{"NODE", "SCORE", "DECIDED BY", "OUTCOME"}, []string{"REQUEST", "ATT", "MODEL", "TIME"}},
	} {
		out, _ := frame{view: ViewRouting, width: tc.width, now: t0, th: plainTheme}.render(&d)
		for _, h := range tc.shown {
			assert.Regexp(t, `(^|\s)`+regexp.QuoteMeta(h)+`(\s|$)`, out, "width %d: column %s", tc.width, h)
		}
		for _, h := range tc.gone {
			assert.NotRegexp(t, `(^|\s)`+regexp.QuoteMeta(h)+`(\s|$)`, out, "width %d: column %s", tc.width, h)
		}
		rowWith(t, out, "us-west-gpu-1", "1.065", "latency", "ok")
		rowWith(t, out, "ap-south-cpu-1", "1.065", "latency", "503")
		for _, l := range strings.Split(out, "\n") {
			assert.LessOrEqual(t, ansi.StringWidth(l), tc.width, "width %d: %q", tc.width, l)
		}
	}
}

func sizeName(w, h int) string {
	if w == 0 {
		return "unlimited"
	}
	return strings.Join([]string{itoa(w), itoa(h)}, "x")
}

func itoa(n int) string { return strconv.Itoa(n) }

// The live frame at 80×24: 24 lines of at most 80 columns, the header, the
// tab bar and the status line, whichever view.
func TestTUIFrame80x24(t *testing.T) {
	now := time.Now()
	d := newMeshFixture(now).data(now)
	for v := range numViews {
		t.Run(v.String(), func(t *testing.T) {
			out, _ := frame{view: v, width: 80, height: 24, footer: true, now: now, th: plainTheme}.render(&d)
			lines := strings.Split(out, "\n")
			assert.Len(t, lines, 24)
			for _, l := range lines {
				assert.LessOrEqual(t, ansi.StringWidth(l), 80, "line %q", l)
			}
			assert.Contains(t, lines[0], "connected")
			assert.Contains(t, lines[0], "mesh degraded")
			assert.Contains(t, lines[1], "1 Catalog")
			assert.Contains(t, lines[1], "7 Help")
			assert.Contains(t, lines[23], "? help")
			assert.NotContains(t, out, "…")
		})
	}
}

func TestTUINarrowLayoutDropsWholeColumns(t *testing.T) {
	tb := func() *table {
		t := &table{cols: []column{{head: "ID", sortBy: noSort}, {head: "LOW", prio: 3, sortBy: noSort},
			{head: "KEEP", sortBy: noSort}, {head: "MID", prio: 1, sortBy: noSort}}}
		t.add("node-1", "low-priority-value", "important", "mid-value")
		return t
	}
	tests := []struct {
		width   int
		present []string
		absent  []string
	}{
		{0, []string{"ID", "LOW", "KEEP", "MID"}, nil},
		{80, []string{"ID", "LOW", "KEEP", "MID"}, nil},
		{40, []string{"ID", "KEEP", "MID", "mid-value"}, []string{"LOW", "low-priority"}},
		{20, []string{"ID", "KEEP", "important"}, []string{"LOW", "MID", "mid"}},
	}
	for _, tt := range tests {
		t.Run(itoa(tt.width), func(t *testing.T) {
			head, lines := tb().render(tt.width, SortNode, plainTheme)
			all := head + "\n" + strings.Join(lines, "\n")
			for _, p := range tt.present {
				assert.Contains(t, all, p)
			}
			for _, a := range tt.absent {
				assert.NotContains(t, all, a)
			}
		})
	}
}

func TestTUIWrappingLastColumn(t *testing.T) {
	tb := &table{cols: []column{{head: "KEY", sortBy: noSort}, {head: "TEXT", sortBy: noSort, wrap: true}}}
	long := "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
	tb.add("k1", long)
	head, lines := tb.render(30, SortNode, plainTheme)
	assert.True(t, strings.HasPrefix(head, "KEY  TEXT"))
	require.Greater(t, len(lines), 1, "the long cell continues below")
	var words []string
	for _, l := range lines {
		assert.LessOrEqual(t, ansi.StringWidth(l), 30, "line %q", l)
		words = append(words, strings.Fields(l)...)
	}
	assert.Equal(t, append([]string{"k1"}, strings.Fields(long)...), words, "every word, in order")
	assert.True(t, strings.HasPrefix(lines[1], "     "), "continuations stay in the column")
}

func TestTUIFlowAndFitLine(t *testing.T) {
	items := []string{"requests 10", "ok 9", "failed 1", "tokens 100"}
	assert.Equal(t, []string{"requests 10  ok 9  failed 1  tokens 100"}, flow(items, 0))
	assert.Equal(t, []string{"requests 10  ok 9", "failed 1  tokens 100"}, flow(items, 20))
	items2 := []item{{"title", 0}, {"state", 0}, {"long-url-here", 2}, {"12:00:00", 3}}
	for _, tc := range []struct {
		width int
		want  string
	}{
		{0, "title  state  long-url-here  12:00:00"},
		{37, "title  state  long-url-here  12:00:00"},
		{36, "title  state  long-url-here"},
		// The clock would fit in 24, but the more important URL does not:
		// nothing less important than a dropped item is shown.
		{24, "title  state"},
		{5, "title  state"}, // prio 0 always
	} {
		assert.Equal(t, tc.want, fitLine(items2, tc.width), "width %d", tc.width)
	}
}

// fit drops from the least important end: once a column does not fit, no
// less important one is shown, however narrow; equal prio keeps the left.
func TestTUIFitDropsTheLeastImportant(t *testing.T) {
	cols := []column{{head: "A"}, {head: "B", prio: 2}, {head: "C", prio: 1}, {head: "D", prio: 1}, {head: "E", prio: 3}}
	widths := []int{4, 10, 6, 6, 1}
	for _, tc := range []struct {
		width int
		want  []int
	}{
		{0, []int{0, 1, 2, 3, 4}},
		{4, []int{0}},
		{15, []int{0, 2}},          // C fits, D (as important, further right) not: E would, but is less important
		{23, []int{0, 2, 3}},       // B (10) does not fit: E (1) would, but is less important
		{32, []int{0, 1, 2, 3}},    // E needs 3 more
		{35, []int{0, 1, 2, 3, 4}}, // all
		{1, []int{0}},              // prio 0 even when it does not fit
	} {
		assert.Equal(t, tc.want, fit(cols, widths, tc.width), "width %d", tc.width)
	}
}

func TestTUISparkline(t *testing.T) {
	nan := math.NaN
	tests := []struct {
		in   []float64
		want string
	}{
		{nil, "-"},
		{[]float64{nan(), nan()}, "-"},
		{[]float64{0, 0}, "▁▁"},
		{[]float64{nan(), 1, 2, 4, 8}, " ▁▂▄█"},
		{[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "▄▅▅▆▇█"}, // the last 6, scaled to their maximum
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, sparkline(tt.in, 6), "%v", tt.in)
	}
}

func TestTUICellsUseOneMissingPlaceholder(t *testing.T) {
	assert.Equal(t, "-", ms(0))
	assert.Equal(t, "-", num(0))
	assert.Equal(t, "-", rate(0, false))
	assert.Equal(t, "0.0", rate(0, true), "a measured zero rate is data")
	assert.Equal(t, "-", sparkline(nil, 4))
	assert.Equal(t, "-", age(time.Now(), time.Time{}))

	// A node with no health record and no stats shows "-", never 0.0.
	d := Data{Nodes: []NodeData{{ID: "bare"}}, Stats: StatsData{Have: true}}
	for _, v := range []View{ViewHealth, ViewCircuits} {
		out, _ := frame{view: v, th: plainTheme}.render(&d)
		row := rowOf(t, out, "bare ")
		assert.NotContains(t, row, "0.0", "%s: %q", v, row)
		assert.Contains(t, row, " - ", "%s: %q", v, row)
	}
}

func TestTUIParseViewAndSortKey(t *testing.T) {
	for i, n := range ViewNames() {
		v, err := ParseView(n)
		require.NoError(t, err)
		assert.Equal(t, View(i), v)
		v, err = ParseView(itoa(i + 1))
		require.NoError(t, err)
		assert.Equal(t, View(i), v)
	}
	_, err := ParseView("bogus")
	assert.ErrorContains(t, err, "catalog, health, routing, circuits, stats, policies, help")
	for i, n := range SortKeyNames() {
		k, err := ParseSortKey(n)
		require.NoError(t, err)
		assert.Equal(t, SortKey(i), k)
	}
	_, err = ParseSortKey("bogus")
	assert.Error(t, err)
}

func TestTUISortNodes(t *testing.T) {
	now := time.Now()
	d := newMeshFixture(now).data(now)
	ids := func(ns []NodeData) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	tests := []struct {
		key  SortKey
		want []string
	}{
		{SortNode, []string{nodeAP, nodeEU, nodeUS}},
		{SortRegion, []string{nodeAP, nodeEU, nodeUS}},
		{SortState, []string{nodeAP, nodeEU, nodeUS}},
		{SortP50, []string{nodeEU, nodeAP, nodeUS}},
		{SortP99, []string{nodeAP, nodeEU, nodeUS}},
		{SortInFlight, []string{nodeUS, nodeAP, nodeEU}},
		{SortRequests, []string{nodeUS, nodeAP, nodeEU}},
		{SortFailures, []string{nodeAP, nodeUS, nodeEU}},
	}
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			assert.Equal(t, tt.want, ids(sortNodes(d.Nodes, tt.key)))
			out, _ := frame{view: ViewHealth, sort: tt.key, th: plainTheme}.render(&d)
			if tt.key != SortRequests && tt.key != SortFailures && tt.key != SortRegion {
				assert.Equal(t, 1, strings.Count(out, "▼"), "the sorted column is marked")
			}
		})
	}
}

// Per-model rows come from fed_health where health keeps them, else from
// the outcomes this top saw; a node's own row says which.
func TestTUIHealthPerModelSources(t *testing.T) {
	now := time.Now()
	d := newMeshFixture(now).data(now)
	out, _ := frame{view: ViewHealth, now: now, th: plainTheme}.render(&d)
	rowWith(t, out, nodeEU, "bge-small", "embed", "fed_health")
	rowWith(t, out, nodeUS, "llama-3-8b", "outcomes")
	row := rowWith(t, out, nodeUS, "qwen-coder-7b", "outcomes")
	assert.Contains(t, row, " 1 ", "its one failure")
	assert.Contains(t, out, "the model server's own load")
	rowWith(t, out, nodeEU, "5/2", "75%", "40%")
}

func TestTUIRoutingShowsExpectedTTFTJudgement(t *testing.T) {
	now := time.Now()
	d := newMeshFixture(now).data(now)
	out, _ := frame{view: ViewRouting, now: now, th: plainTheme}.render(&d)
	assert.Contains(t, out, "PRED TTFT")
	rowWith(t, out, "req-ok", "42", "50%", "router-1")
	row := rowWith(t, out, "req-fail")
	assert.NotContains(t, row, "%", "no judgement under other strategies: -")
}

func TestTUIWrapBreaksAtSeparators(t *testing.T) {
	tests := []struct {
		text  string
		width int
		want  []string
	}{
		{"llama-3-8b,qwen-coder-7b,bge-small", 24, []string{"llama-3-8b,", "qwen-coder-7b,bge-small"}},
		{"llama-3-8b,qwen-coder-7b,bge-small", 25, []string{"llama-3-8b,qwen-coder-7b,", "bge-small"}},
		{"one two three", 8, []string{"one two", "three"}},
		{"abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"short", 0, []string{"short"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, wrap(tt.text, tt.width), "%q at %d", tt.text, tt.width)
	}
}
