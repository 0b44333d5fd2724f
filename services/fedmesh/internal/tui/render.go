package tui

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/fedmesh/fedmesh/shared/record"
)

// SortKey is the column the node tables (catalog, health, circuits, stats
// per node) are sorted by.
type SortKey int

// Sort keys in the order `s` cycles through them. Text columns sort
// ascending; state sorts worst first; numbers sort largest first; a node
// without the value comes last. Ties go by node id.
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

// sortValue is a node's value for a numeric key, and whether it has one.
func sortValue(n *NodeData, key SortKey) (float64, bool) {
	h, c := n.Health, n.Counters
	switch key {
	case SortP50:
		if h != nil && h.LatencyP50Ms > 0 {
			return h.LatencyP50Ms, true
		}
	case SortP99:
		if h != nil && h.LatencyP99Ms > 0 {
			return h.LatencyP99Ms, true
		}
	case SortInFlight:
		if hb := n.Heartbeat; hb != nil {
			return float64(hb.InFlight), true
		}
		if h != nil {
			return float64(h.InFlight), true
		}
	case SortThroughput:
		if hb := n.Heartbeat; hb != nil && hb.ThroughputTPS > 0 {
			return hb.ThroughputTPS, true
		}
		if h != nil && h.ThroughputTPS > 0 {
			return h.ThroughputTPS, true
		}
	case SortRequests:
		if c != nil {
			return float64(c.TotalRequests), true
		}
	case SortFailures:
		if c != nil {
			return float64(c.FailedRequests), true
		}
	}
	return 0, false
}

// sortNodes returns a sorted copy of nodes.
func sortNodes(nodes []NodeData, key SortKey) []NodeData {
	out := append([]NodeData(nil), nodes...)
	cmp := func(a, b *NodeData) int { // <0: a first
		switch key {
		case SortRegion:
			return strings.Compare(regionOf(a), regionOf(b))
		case SortState:
			return rankOf(stateOf(a)) - rankOf(stateOf(b))
		case SortNode:
			return 0
		}
		x, okx := sortValue(a, key)
		y, oky := sortValue(b, key)
		switch {
		case okx != oky:
			if okx {
				return -1
			}
			return 1
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		if c := cmp(&out[i], &out[j]); c != 0 {
			return c < 0
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func regionOf(n *NodeData) string {
	if n.Catalog != nil {
		return n.Catalog.Region
	}
	return "\uffff" // unregistered nodes last
}

// stateOf is the node's health state; unknown without a health record.
func stateOf(n *NodeData) string {
	if n.Health != nil && n.Health.State != "" {
		return n.Health.State
	}
	return record.StateUnknown
}

// circuitOf is the node's circuit; closed without a health record.
func circuitOf(n *NodeData) string {
	if n.Health != nil && n.Health.Circuit != "" {
		return n.Health.Circuit
	}
	return record.CircuitClosed
}

// theme colours a piece of text by its class ("title", "label", "head",
// "dim", "error", "tab", "tab:on", "mesh:<state>", "state:<state>",
// "circuit:<circuit>", "conn:<state>", "ok", "bad").
type theme func(class, text string) string

func plainTheme(_, text string) string { return text }

var colorStyles = map[string]lipgloss.Style{
	"title":                             lipgloss.NewStyle().Bold(true),
	"label":                             lipgloss.NewStyle().Faint(true),
	"head":                              lipgloss.NewStyle().Bold(true),
	"dim":                               lipgloss.NewStyle().Faint(true),
	"error":                             lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
	"bad":                               lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
	"ok":                                lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
	"tab:on":                            lipgloss.NewStyle().Bold(true).Reverse(true),
	"tab":                               lipgloss.NewStyle().Faint(true),
	"mesh:" + record.MeshReady:          lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("10")),
	"mesh:" + record.MeshDegraded:       lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("11")),
	"mesh:" + record.MeshInitializing:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
	"conn:" + ConnConnected:             lipgloss.NewStyle().Foreground(lipgloss.Color("10")),
	"conn:" + ConnReconnecting:          lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
	"conn:" + ConnClosed:                lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
	"conn:" + ConnConnecting:            lipgloss.NewStyle().Foreground(lipgloss.Color("11")),
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

// Cell formats. Every one gives "-" for missing data, never a made-up 0.

// ms is a latency in milliseconds; 0 or less means none measured.
func ms(v float64) string {
	switch {
	case v <= 0 || isNaN(v):
		return "-"
	case v < 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// msUnit is ms with its unit, or "-" alone.
func msUnit(v float64) string {
	if s := ms(v); s != "-" {
		return s + " ms"
	}
	return "-"
}

// num is a positive measurement (tokens/s, req/s); 0 or less means none.
func num(v float64) string {
	if v <= 0 || isNaN(v) {
		return "-"
	}
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// rate is a request rate that may really be 0.
func rate(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	if v < 10 {
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

// count formats a counter of a record that may be missing.
func count[T ~int | ~int64](v T, have bool) string {
	if !have {
		return "-"
	}
	return fmt.Sprint(v)
}

func pct(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }

// age is how long ago t was, in the largest unit that matters.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return dur(now.Sub(t))
}

// dur is d rounded for a table cell: "850ms", "12s", "4m10s", "3h".
func dur(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
