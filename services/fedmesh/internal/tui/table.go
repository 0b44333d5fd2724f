package tui

import (
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"
)

// Layout rules of every view: a narrow terminal drops whole columns of
// low priority (and whole header items), never cuts a cell short; the one
// placeholder for missing data is "-".

// column of a table. prio 0 is always shown; when the width is short the
// others are added in order of importance (increasing prio, left first
// among equals) until one does not fit: that one and every less
// important one are dropped.
type column struct {
	head   string
	right  bool
	prio   int
	sortBy SortKey // the node sort key the column shows, or noSort
	// wrap: when it is the last column shown, a long cell continues on
	// the next lines instead of widening the table (lists, free text).
	wrap bool
}

// wrapMin is the least width a wrapping column is given.
const wrapMin = 20

const noSort SortKey = -1

// table is a block of a view: columns, rows of cells (plain text) and an
// optional colour class per cell.
type table struct {
	cols    []column
	rows    [][]string
	classes [][]string // nil, or per row per column ("" for none)
	empty   string     // shown instead of the head when there are no rows
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// addClassed adds a row with colour classes.
func (t *table) addClassed(cells, classes []string) {
	for len(t.classes) < len(t.rows) {
		t.classes = append(t.classes, nil)
	}
	t.rows = append(t.rows, cells)
	t.classes = append(t.classes, classes)
}

// filter keeps the rows any cell of which contains f (any case), and
// reports how many rows it hid.
func (t *table) filter(f string) int {
	if f == "" {
		return 0
	}
	f = strings.ToLower(f)
	var rows, classes [][]string
	for i, r := range t.rows {
		if strings.Contains(strings.ToLower(strings.Join(r, "\x00")), f) {
			rows = append(rows, r)
			if i < len(t.classes) {
				classes = append(classes, t.classes[i])
			} else {
				classes = append(classes, nil)
			}
		}
	}
	hidden := len(t.rows) - len(rows)
	t.rows, t.classes = rows, classes
	return hidden
}

// widths of each column: its head or its widest cell.
func (t *table) widths(key SortKey) []int {
	w := make([]int, len(t.cols))
	for c, col := range t.cols {
		w[c] = ansi.StringWidth(col.headText(key))
		for _, r := range t.rows {
			if c < len(r) {
				w[c] = max(w[c], ansi.StringWidth(r[c]))
			}
		}
	}
	return w
}

func (c column) headText(key SortKey) string {
	if c.sortBy != noSort && c.sortBy == key {
		return c.head + "▼"
	}
	return c.head
}

// fit picks the columns shown in width (0: every column): every prio-0
// column, then the rest in order of importance (increasing prio, left
// first among equals) up to the first that does not fit. A narrow
// layout so drops the least important columns, never a more important
// one while showing a less important one that happens to be narrower.
// The result is in table order.
func fit(cols []column, widths []int, width int) []int {
	all := make([]int, len(cols))
	for i := range all {
		all[i] = i
	}
	if width <= 0 {
		return all
	}
	order := append([]int(nil), all...)
	sort.SliceStable(order, func(a, b int) bool { return cols[order[a]].prio < cols[order[b]].prio })
	keep := make([]bool, len(cols))
	used := -gap
	for _, c := range order {
		need := widths[c] + gap
		if cols[c].prio != 0 && used+need > width {
			break
		}
		keep[c] = true
		used += need
	}
	var out []int
	for _, c := range all {
		if keep[c] {
			out = append(out, c)
		}
	}
	return out
}

// gap between two columns.
const gap = 2

// render lays the table out in width: the head line, then one line per row.
func (t *table) render(width int, key SortKey, th theme) (head string, lines []string) {
	if len(t.rows) == 0 {
		if t.empty == "" {
			return "", nil
		}
		return "", []string{th("dim", t.empty)}
	}
	w := t.widths(key)
	fw := append([]int(nil), w...)
	for c, col := range t.cols {
		if col.wrap {
			fw[c] = min(fw[c], wrapMin)
		}
	}
	shown := fit(t.cols, fw, width)
	// Only the last column shown may wrap: any other needs its full width.
	for again := true; again; {
		again = false
		for _, c := range shown[:len(shown)-1] {
			if fw[c] != w[c] {
				fw[c], again = w[c], true
			}
		}
		if again {
			shown = fit(t.cols, fw, width)
		}
	}
	last := shown[len(shown)-1]
	wrapLast := width > 0 && t.cols[last].wrap
	if wrapLast {
		used := 0
		for _, c := range shown[:len(shown)-1] {
			used += w[c] + gap
		}
		w[last] = min(w[last], max(width-used, wrapMin))
	}
	pad := func(c int, text string, last bool) string {
		if last && !t.cols[c].right {
			return text // no trailing spaces
		}
		fill := strings.Repeat(" ", w[c]-ansi.StringWidth(text))
		if t.cols[c].right {
			return fill + text
		}
		return text + fill
	}
	sep := strings.Repeat(" ", gap)
	var hb strings.Builder
	for i, c := range shown {
		if i > 0 {
			hb.WriteString(sep)
		}
		hb.WriteString(th("head", pad(c, t.cols[c].headText(key), i == len(shown)-1)))
	}
	for r, row := range t.rows {
		var more []string // continuation lines of a wrapping last cell
		var b strings.Builder
		for i, c := range shown {
			if i > 0 {
				b.WriteString(sep)
			}
			text := ""
			if c < len(row) {
				text = row[c]
			}
			if c == last && wrapLast {
				parts := wrap(text, w[c])
				text, more = parts[0], parts[1:]
			}
			text = pad(c, text, i == len(shown)-1)
			if r < len(t.classes) && c < len(t.classes[r]) && t.classes[r][c] != "" {
				text = th(t.classes[r][c], text)
			}
			b.WriteString(text)
		}
		lines = append(lines, b.String())
		if len(more) > 0 {
			lead := 0
			for _, c := range shown[:len(shown)-1] {
				lead += w[c] + gap
			}
			for _, m := range more {
				lines = append(lines, strings.Repeat(" ", lead)+m)
			}
		}
	}
	return hb.String(), lines
}

// item of a line of label-value pairs: prio 0 is always shown, others are
// dropped (the least important first, as fit drops columns) when the line
// is short.
type item struct {
	text string // may hold colour codes
	prio int
}

// fitLine joins the items that fit in width on one line.
func fitLine(items []item, width int) string {
	cols := make([]column, len(items))
	widths := make([]int, len(items))
	for i, it := range items {
		cols[i] = column{prio: it.prio}
		widths[i] = ansi.StringWidth(it.text)
	}
	var parts []string
	for _, i := range fit(cols, widths, width) {
		parts = append(parts, items[i].text)
	}
	return strings.Join(parts, strings.Repeat(" ", gap))
}

// flow packs items onto as many lines of width as they need (0: one line),
// never splitting an item.
func flow(items []string, width int) []string {
	var lines []string
	cur, used := "", 0
	for _, it := range items {
		w := ansi.StringWidth(it)
		if cur != "" && width > 0 && used+gap+w > width {
			lines = append(lines, cur)
			cur, used = "", 0
		}
		if cur != "" {
			cur += strings.Repeat(" ", gap)
			used += gap
		}
		cur += it
		used += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}

// wrap breaks plain text into lines of at most width (0: one line), at
// spaces where it can, else mid-word: free text such as a rejected JSON
// value is shown whole.
func wrap(text string, width int) []string {
	if width <= 0 || ansi.StringWidth(text) <= width {
		return []string{text}
	}
	var lines []string
	for ansi.StringWidth(text) > width {
		cut := ansi.Truncate(text, width, "")
		if cut == "" { // a rune wider than the line
			_, size := utf8.DecodeRuneInString(text)
			cut = text[:size]
		}
		// Break after a space or comma: the last one, unless that leaves
		// too short a line for a long word, or the next piece would start
		// with a comma.
		if next := text[len(cut):]; next != "" && next[0] != ' ' && !strings.HasSuffix(cut, ",") {
			if i := strings.LastIndexAny(cut, " ,"); i > 0 && (i > width/2 || next[0] == ',') {
				cut = cut[:i+1]
			}
		}
		lines = append(lines, strings.TrimRight(cut, " "))
		text = strings.TrimLeft(text[len(cut):], " ")
	}
	if text != "" {
		lines = append(lines, text)
	}
	return lines
}

var sparkRunes = []rune("▁▂▃▄▅▆▇█")

// sparkline draws the last n points of v scaled to their own maximum; a
// point without data is a space, a series without any data is "-".
func sparkline(v []float64, n int) string {
	if len(v) > n {
		v = v[len(v)-n:]
	}
	hi, any := 0.0, false
	for _, x := range v {
		if !isNaN(x) {
			hi, any = math.Max(hi, x), true
		}
	}
	if !any {
		return "-"
	}
	var b strings.Builder
	for _, x := range v {
		switch {
		case isNaN(x):
			b.WriteRune(' ')
		case hi <= 0:
			b.WriteRune(sparkRunes[0])
		default:
			i := int(x / hi * float64(len(sparkRunes)-1))
			b.WriteRune(sparkRunes[max(0, min(i, len(sparkRunes)-1))])
		}
	}
	return b.String()
}

func isNaN(x float64) bool { return math.IsNaN(x) }
