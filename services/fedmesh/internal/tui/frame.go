package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"
)

// frame says how to draw one screen.
type frame struct {
	view          View
	width, height int // 0: no limit (--once)
	sort          SortKey
	filter        string
	editing       bool // the filter is being typed
	offset        int  // first body line shown
	paused        bool
	footer        bool // the live view's status and key line
	now           time.Time
	th            theme
}

// render draws d as f says and returns the text and the offset it used
// (clamped to the body).
func (f frame) render(d *Data) (string, int) {
	b := &body{width: f.width, sort: f.sort, filter: f.filter, th: f.th}
	renderBody(d, f.view, b, f.now)
	lines := []string{f.header(d), f.tabs()}

	bodyH := -1 // all
	if f.height > 0 {
		bodyH = max(1, f.height-len(lines)-1)
		if !f.footer {
			bodyH++
		}
	}
	shown, off := scroll(b.lines, bodyH, f.offset)
	lines = append(lines, shown...)
	if f.footer {
		for len(lines) < f.height-1 {
			lines = append(lines, "")
		}
		lines = append(lines, f.status(b, off, len(shown), len(b.lines)))
	}
	if f.width > 0 {
		for i, l := range lines {
			// The last resort for a line even the kept columns overflow
			// (a huge id): cut it rather than let the terminal wrap it.
			lines[i] = ansi.Truncate(l, f.width, "")
		}
	}
	if f.footer {
		// Exactly the screen: a trailing newline would make bubbletea
		// drop the top line (the header) to fit.
		return strings.Join(lines, "\n"), off
	}
	return strings.Join(lines, "\n") + "\n", off
}

// scroll picks bodyH lines (all when < 0) from off, keeping the head of
// the table whose rows it shows.
func scroll(lines []bodyLine, bodyH, off int) ([]string, int) {
	if bodyH < 0 || len(lines) <= bodyH {
		out := make([]string, len(lines))
		for i, l := range lines {
			out[i] = l.text
		}
		return out, 0
	}
	sticky := func(o int) bool { return o > 0 && lines[o].head >= 0 && lines[o].head < o }
	maxOff := len(lines) - bodyH
	if sticky(maxOff) {
		maxOff++ // the kept head takes a line: one more offset reaches the last row
	}
	off = max(0, min(off, maxOff))
	var out []string
	from := off
	if sticky(off) {
		out = append(out, lines[lines[off].head].text)
	}
	for i := from; i < len(lines) && len(out) < bodyH; i++ {
		out = append(out, lines[i].text)
	}
	return out, off
}

func (f frame) header(d *Data) string {
	th := f.th
	items := []item{{th("title", "fedmesh top"), 0}}
	c := d.Conn
	items = append(items, item{th("conn:"+c.State, c.State), 0})
	if c.Up() {
		mesh := "-"
		if d.Stats.Have && d.Stats.Err == "" {
			mesh = dash(d.Stats.Stats.State)
		}
		items = append(items, item{th("label", "mesh") + " " + th("mesh:"+mesh, mesh), 0})
	}
	items = append(items, item{c.URL, 2})
	if !c.Up() && !c.Since.IsZero() {
		items = append(items, item{th("dim", "since "+c.Since.Format("15:04:05")), 1})
	}
	if !c.Up() && c.LastErr != "" {
		items = append(items, item{th("dim", c.LastErr), 5})
	}
	if d.Loading != "" {
		items = append(items, item{th("dim", d.Loading), 1})
	}
	if f.paused {
		items = append(items, item{th("error", "PAUSED"), 0})
	}
	if !f.now.IsZero() {
		items = append(items, item{th("dim", f.now.Format("15:04:05")), 3})
	}
	return fitLine(items, f.width)
}

// tabs is the tab bar; when the names do not fit, only the current view
// keeps its name.
func (f frame) tabs() string {
	build := func(short bool) string {
		parts := make([]string, numViews)
		for v := range numViews {
			label := fmt.Sprintf("%d %s", v+1, v.Title())
			switch {
			case v == f.view:
				parts[v] = f.th("tab:on", "["+label+"]")
			case short:
				parts[v] = f.th("tab", fmt.Sprint(v+1))
			default:
				parts[v] = f.th("tab", " "+label+" ")
			}
		}
		return strings.TrimRight(strings.Join(parts, " "), " ")
	}
	if full := build(false); f.width <= 0 || ansi.StringWidth(full) <= f.width {
		return full
	}
	return build(true)
}

func (f frame) status(b *body, off, shown, total int) string {
	th := f.th
	var items []item
	switch {
	case f.editing:
		items = append(items, item{"filter /" + f.filter + "_", 0}, item{th("dim", "enter keeps, esc clears"), 1})
	case f.filter != "":
		items = append(items, item{fmt.Sprintf("filter /%s (%d hidden)", f.filter, b.hidden), 0})
	}
	if total > shown {
		items = append(items, item{th("dim", fmt.Sprintf("lines %d-%d of %d", off+1, min(total, off+shown), total)), 1})
	}
	if f.view != ViewHelp && f.view != ViewRouting && f.view != ViewPolicies {
		items = append(items, item{th("dim", "sort "+f.sort.String()), 3})
	}
	items = append(items, item{th("dim", "? help"), 0}, item{th("dim", "tab views"), 2}, item{th("dim", "/ filter"), 2},
		item{th("dim", "q quit"), 1})
	return fitLine(items, f.width)
}
