package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/fedmesh/fedmesh/shared/record"
)

// SortKey is the column the nodes table is sorted by.
type SortKey int

// Sort keys in the order `s` cycles through them. Text columns sort
// ascending; state sorts worst first; numbers sort largest first. Ties go
// by node id.
const (
	SortNode SortKey = iota
	SortRegion
	SortState
	SortP50
	SortP99
	SortInFlight
	SortThroughput
	SortRequests
	SortFailures
	numSortKeys
)

var sortNames = [numSortKeys]string{"node", "region", "state", "p50", "p99", "inflight", "tps", "requests", "failures"}

func (k SortKey) String() string {
	if k < 0 || k >= numSortKeys {
		return fmt.Sprintf("SortKey(%d)", int(k))
	}
	return sortNames[k]
}

// Next is the key after k, wrapping around.
func (k SortKey) Next() SortKey { return (k + 1) % numSortKeys }

// SortKeyNames lists the names ParseSortKey accepts.
func SortKeyNames() []string { return append([]string(nil), sortNames[:]...) }

// ParseSortKey maps a name of SortKeyNames to its key.
func ParseSortKey(name string) (SortKey, error) {
	for i, n := range sortNames {
		if strings.EqualFold(n, name) {
			return SortKey(i), nil
		}
	}
	return 0, fmt.Errorf("unknown sort column %q (want one of %s)", name, strings.Join(sortNames[:], ", "))
}

// stateRank orders node states worst first.
var stateRank = map[string]int{record.StateUnhealthy: 0, record.StateDegraded: 1, record.StateUnknown: 2, record.StateHealthy: 3}

func rankOf(state string) int {
	if r, ok := stateRank[state]; ok {
		return r
	}
	return len(stateRank)
}

// sortNodes returns a sorted copy of nodes.
func sortNodes(nodes []Node, key SortKey) []Node {
	out := append([]Node(nil), nodes...)
	less := func(a, b *Node) int { // <0: a first, >0: b first, 0: tie
		desc := func(x, y float64) int {
			switch {
			case x > y:
				return -1
			case x < y:
				return 1
			}
			return 0
		}
		switch key {
		case SortRegion:
			return strings.Compare(a.Region, b.Region)
		case SortState:
			return rankOf(a.State) - rankOf(b.State)
		case SortP50:
			return desc(a.P50Ms, b.P50Ms)
		case SortP99:
			return desc(a.P99Ms, b.P99Ms)
		case SortInFlight:
			return desc(float64(a.InFlight), float64(b.InFlight))
		case SortThroughput:
			return desc(a.ThroughputTPS, b.ThroughputTPS)
		case SortRequests:
			return desc(float64(a.Requests), float64(b.Requests))
		case SortFailures:
			return desc(float64(a.Failures), float64(b.Failures))
		}
		return 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		if c := less(&out[i], &out[j]); c != 0 {
			return c < 0
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// theme colours a piece of text by its class ("title", "label", "head",
// "dim", "mesh:<state>", "state:<state>", "circuit:<circuit>").
type theme func(class, text string) string

func plainTheme(_, text string) string { return text }

var colorStyles = map[string]lipgloss.Style{
	"title":                             lipgloss.NewStyle().Bold(true),
	"label":                             lipgloss.NewStyle().Faint(true),
	"head":                              lipgloss.NewStyle().Bold(true).Underline(true),
	"dim":                               lipgloss.NewStyle().Faint(true),
	"error":                             lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
	"mesh:" + record.MeshReady:          lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("10")),
	"mesh:" + record.MeshDegraded:       lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("11")),
	"mesh:" + record.MeshInitializing:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
	"state:" + record.StateHealthy:      lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
	"state:" + record.StateDegraded:     lipgloss.NewStyle().Foreground(lipgloss.Color("11")),
	"state:" + record.StateUnhealthy:    lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
	"state:" + record.StateUnknown:      lipgloss.NewStyle().Foreground(lipgloss.Color("8")),
	"circuit:" + record.CircuitOpen:     lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
	"circuit:" + record.CircuitHalfOpen: lipgloss.NewStyle().Foreground(lipgloss.Color("11")),
}

func colorTheme(class, text string) string {
	if st, ok := colorStyles[class]; ok {
		return st.Render(text)
	}
	return text
}

// render is one plain-text frame: header with the mesh state and totals,
// then the nodes table sorted by key. width > 0 cuts longer lines.
func render(s Snapshot, width int, key SortKey) string {
	return renderWith(s, width, key, plainTheme)
}

func renderWith(s Snapshot, width int, key SortKey, th theme) string {
	var b strings.Builder
	line := func(parts ...string) {
		l := strings.Join(parts, "  ")
		if width > 0 {
			l = ansi.Truncate(l, width, "…")
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	kv := func(label, value string) string { return th("label", label) + " " + value }

	mesh := s.Mesh
	if mesh == "" {
		mesh = "unknown"
	}
	when := ""
	if !s.Time.IsZero() {
		when = th("dim", s.Time.Format("15:04:05"))
	}
	line(th("title", "fedmesh top"), kv("mesh", th("mesh:"+mesh, mesh)), kv("nats", s.NATSURL), when)

	t := s.Totals
	unplaced := fmt.Sprint(s.UnplacedTotal())
	if len(s.Unplaced) > 0 {
		codes := make([]string, 0, len(s.Unplaced))
		for c := range s.Unplaced {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for i, c := range codes {
			codes[i] = fmt.Sprintf("%s:%d", c, s.Unplaced[c])
		}
		unplaced += " (" + strings.Join(codes, " ") + ")"
	}
	rate := "-"
	if s.RateKnown {
		rate = fmt.Sprintf("%.1f", s.ReqPerSec)
	}
	line(kv("requests", fmt.Sprint(t.TotalRequests)), kv("success", fmt.Sprint(t.SuccessfulRequests)),
		kv("failed", fmt.Sprint(t.FailedRequests)), kv("tokens", fmt.Sprint(t.TotalTokens)), kv("req/s", rate))
	line(kv("retries", fmt.Sprint(t.Retries)), kv("dispatch failures", fmt.Sprint(t.DispatchFailures)),
		kv("unplaced", unplaced), kv("active streams", fmt.Sprint(t.ActiveStreams)))
	line(kv("latency p50", ms(t.LatencyP50Ms)+" ms"), kv("p99", ms(t.LatencyP99Ms)+" ms"), kv("ttft p50", ms(t.TTFTP50Ms)+" ms"))
	b.WriteByte('\n')

	if len(s.Nodes) == 0 {
		line(th("dim", "no nodes registered"))
		return b.String()
	}
	renderTable(&b, sortNodes(s.Nodes, key), key, th, line)
	return b.String()
}

// column of the nodes table; sortBy marks the column a key sorts.
type column struct {
	head   string
	right  bool
	sortBy SortKey
	class  func(*Node) string // colour class of the cell, "" for none
	cell   func(*Node) string
}

var noSort SortKey = -1

var columns = []column{
	{head: "NODE", sortBy: SortNode, cell: func(n *Node) string {
		if !n.Registered {
			return n.ID + "?"
		}
		return n.ID
	}},
	{head: "REGION", sortBy: SortRegion, cell: func(n *Node) string { return dash(n.Region) }},
	{head: "GPU", sortBy: noSort, cell: func(n *Node) string {
		if !n.Registered {
			return "-"
		}
		if n.GPU {
			return "yes"
		}
		return "no"
	}},
	{head: "CLEARANCE", sortBy: noSort, cell: func(n *Node) string { return dash(n.Clearance) }},
	{head: "STATE", sortBy: SortState, class: func(n *Node) string { return "state:" + n.State }, cell: func(n *Node) string { return n.State }},
	{head: "CIRCUIT", sortBy: noSort, class: func(n *Node) string { return "circuit:" + n.Circuit }, cell: func(n *Node) string { return n.Circuit }},
	{head: "P50 MS", right: true, sortBy: SortP50, cell: func(n *Node) string { return ms(n.P50Ms) }},
	{head: "P99 MS", right: true, sortBy: SortP99, cell: func(n *Node) string { return ms(n.P99Ms) }},
	{head: "IN FLIGHT", right: true, sortBy: SortInFlight, cell: func(n *Node) string {
		if n.MaxInFlight > 0 {
			return fmt.Sprintf("%d/%d", n.InFlight, n.MaxInFlight)
		}
		return fmt.Sprint(n.InFlight)
	}},
	{head: "TOK/S", right: true, sortBy: SortThroughput, cell: func(n *Node) string { return fmt.Sprintf("%.1f", n.ThroughputTPS) }},
	{head: "REQS", right: true, sortBy: SortRequests, cell: func(n *Node) string { return fmt.Sprint(n.Requests) }},
	{head: "FAILS", right: true, sortBy: SortFailures, cell: func(n *Node) string { return fmt.Sprint(n.Failures) }},
	{head: "MODELS", sortBy: noSort, cell: func(n *Node) string { return dash(strings.Join(n.Models, ",")) }},
}

func renderTable(b *strings.Builder, nodes []Node, key SortKey, th theme, line func(...string)) {
	heads := make([]string, len(columns))
	widths := make([]int, len(columns))
	cells := make([][]string, len(nodes))
	for c, col := range columns {
		heads[c] = col.head
		if col.sortBy == key {
			heads[c] += "▼"
		}
		widths[c] = lipgloss.Width(heads[c])
	}
	for r := range nodes {
		cells[r] = make([]string, len(columns))
		for c, col := range columns {
			cells[r][c] = col.cell(&nodes[r])
			widths[c] = max(widths[c], lipgloss.Width(cells[r][c]))
		}
	}
	pad := func(c int, text string) string {
		gap := strings.Repeat(" ", widths[c]-lipgloss.Width(text))
		if columns[c].right {
			return gap + text
		}
		return text + gap
	}
	row := make([]string, len(columns))
	for c := range columns {
		text := heads[c]
		if c < len(columns)-1 {
			text = pad(c, text)
		}
		row[c] = th("head", text)
	}
	line(row...)
	for r := range nodes {
		row := make([]string, len(columns))
		for c, col := range columns {
			text := cells[r][c] // the last column gets no trailing spaces
			if c < len(columns)-1 {
				text = pad(c, text)
			}
			if col.class != nil {
				text = th(col.class(&nodes[r]), text)
			}
			row[c] = text
		}
		line(row...)
	}
}

func ms(v float64) string {
	switch {
	case v <= 0:
		return "-"
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
