package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// Defaults of Options, also the flags of `fedmesh top`.
const (
	DefaultInterval = time.Second
	// DefaultTimeout bounds a fed.stats request well under the CLI's 30 s
	// request deadline, which would freeze a 1 s view.
	DefaultTimeout = 2 * time.Second
	// frameEvery caps redraws when events pour in: changes in between are
	// shown together.
	frameEvery = 100 * time.Millisecond
)

// Options configure the view.
type Options struct {
	// View shown first.
	View View
	// Sort is the initial sort column of the node tables.
	Sort SortKey
}

// Messages the model handles besides keys and window sizes.
type (
	// dataMsg: a fresh copy of the source's data.
	dataMsg struct{ data Data }
	// tickMsg: a second passed (ages and countdowns move).
	tickMsg time.Time
)

// Model is the bubbletea model of `fedmesh top`: the source pushes
// changes (KV watches, events), the model redraws at most every
// frameEvery, and a one-second tick keeps ages and countdowns moving.
type Model struct {
	src  Source
	stop <-chan struct{} // ends the wait for changes when the program quits

	data Data
	now  time.Time

	view     View
	back     View // the view help returns to
	offsets  [numViews]int
	filter   string
	editing  bool
	sortKey  SortKey
	paused   bool
	width    int
	height   int
	lastDraw time.Time
}

// New builds the model on src; stop (may be nil) ends its wait for
// changes once the program is done.
func New(src Source, o Options, stop <-chan struct{}) Model {
	v := o.View
	if v < 0 || v >= numViews {
		v = ViewCatalog
	}
	return Model{src: src, stop: stop, view: v, back: v, sortKey: o.Sort, data: src.Snapshot(), now: time.Now()}
}

// Init implements tea.Model.
func (m Model) Init() tea.Cmd { return tea.Batch(m.wait(), tick()) }

// wait blocks until the source changed, then hands over a fresh copy no
// sooner than frameEvery after the previous one.
func (m Model) wait() tea.Cmd {
	src, stop, last := m.src, m.stop, m.lastDraw
	return func() tea.Msg {
		select {
		case <-src.Changed():
		case <-stop:
			return nil
		}
		if d := frameEvery - time.Since(last); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-stop:
				return nil
			}
		}
		return dataMsg{data: src.Snapshot()}
	}
}

func tick() tea.Cmd { return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) }) }

// Update implements tea.Model.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		return m.key(msg)
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case dataMsg:
		m.lastDraw = time.Now()
		if !m.paused {
			m.data = msg.data
		}
		return m, m.wait()
	case tickMsg:
		if !m.paused {
			m.now = time.Time(msg)
		}
		return m, tick()
	}
	return m, nil
}

func (m Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if m.editing {
		switch k.Type {
		case tea.KeyEnter:
			m.editing = false
		case tea.KeyEsc:
			m.editing, m.filter = false, ""
		case tea.KeyBackspace:
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case tea.KeyCtrlC:
			return m, tea.Quit
		case tea.KeySpace:
			m.filter += " "
		case tea.KeyRunes:
			m.filter += string(k.Runes)
		}
		m.offsets[m.view] = 0
		return m, nil
	}
	page := max(1, m.height-4)
	switch s := k.String(); s {
	case "q", "ctrl+c":
		return m, tea.Quit
	case "1", "2", "3", "4", "5", "6", "7":
		m.show(View(s[0] - '1'))
	case "tab", "right":
		m.show((m.view + 1) % numViews)
	case "shift+tab", "left":
		m.show((m.view + numViews - 1) % numViews)
	case "?", "h":
		if m.view == ViewHelp {
			m.show(m.back)
		} else {
			m.show(ViewHelp)
		}
	case "esc":
		switch {
		case m.filter != "":
			m.filter = ""
		case m.view == ViewHelp:
			m.show(m.back)
		}
	case "/":
		m.editing = true
	case "up", "k":
		m.scroll(-1)
	case "down", "j":
		m.scroll(1)
	case "pgup", "ctrl+u":
		m.scroll(-page)
	case "pgdown", "ctrl+d":
		m.scroll(page)
	case "home", "g":
		m.offsets[m.view] = 0
	case "end", "G":
		m.offsets[m.view] = 1 << 30 // clamped when drawn
	case "s":
		m.sortKey = m.sortKey.Next()
	case "p", " ":
		m.paused = !m.paused
		if !m.paused {
			m.data, m.now = m.src.Snapshot(), time.Now()
		}
	}
	return m, nil
}

func (m *Model) show(v View) {
	if v != ViewHelp {
		m.back = v
	}
	m.view = v
}

// scroll moves the current view's first line by n, within the body as
// the last frame laid it out.
func (m *Model) scroll(n int) {
	_, off := m.frame().render(&m.data)
	m.offsets[m.view] = max(0, off+n)
}

func (m Model) frame() frame {
	return frame{view: m.view, width: m.width, height: m.height, sort: m.sortKey, filter: m.filter,
		editing: m.editing, offset: m.offsets[m.view], paused: m.paused, footer: true, now: m.now, th: colorTheme}
}

// View implements tea.Model.
func (m Model) View() string {
	s, _ := m.frame().render(&m.data)
	return s
}

// Current is the view shown.
func (m Model) Current() View { return m.view }

// Filter is the row filter ("" for none) and whether it is being typed.
func (m Model) Filter() (string, bool) { return m.filter, m.editing }

// Paused reports whether the display is frozen.
func (m Model) Paused() bool { return m.paused }

// SortKey is the current sort column.
func (m Model) SortKey() SortKey { return m.sortKey }

// Data is the copy of the source's data the view shows.
func (m Model) Data() Data { return m.data }

// Run shows the live view until the user quits or ctx ends.
func Run(ctx context.Context, src Source, o Options, in io.Reader, out io.Writer) error {
	stop := make(chan struct{})
	defer close(stop)
	p := tea.NewProgram(New(src, o, stop), tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	_, err := p.Run()
	if ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) {
		return nil // the caller's context ended (SIGINT/SIGTERM): a normal way out
	}
	if errors.Is(err, tea.ErrInterrupted) {
		return nil // ctrl-c outside raw mode
	}
	return err
}

// ReadySource is a source that can say when it has loaded the mesh.
type ReadySource interface {
	Source
	Ready(ctx context.Context) error
}

// OnceOptions configure Once.
type OnceOptions struct {
	View  View
	Sort  SortKey
	Width int // 0: no limit, every column
	// Collect is how long to gather events after the mesh is loaded
	// (the routing tail only has what arrives while top runs).
	Collect time.Duration
}

// Once waits until src has loaded the mesh (ctx bounds the wait), gathers
// events for Collect, and writes one plain-text frame of the view.
func Once(ctx context.Context, src ReadySource, o OnceOptions, w io.Writer) error {
	if err := src.Ready(ctx); err != nil {
		return err
	}
	if o.Collect > 0 {
		t := time.NewTimer(o.Collect)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("collecting events: %w", ctx.Err())
		}
	}
	d := src.Snapshot()
	s, _ := frame{view: o.View, width: o.Width, sort: o.Sort, now: d.Taken, th: plainTheme}.render(&d)
	_, err := io.WriteString(w, s)
	return err
}
