package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
)

// Defaults of Options, also the flags of `fedmesh top`.
const (
	DefaultInterval = time.Second
	// DefaultTimeout bounds a refresh well under the CLI's 30 s request
	// deadline, which would freeze a 1 s view.
	DefaultTimeout = 2 * time.Second
)

// Options configure the view.
type Options struct {
	// Interval between the end of one refresh and the start of the next
	// (default DefaultInterval).
	Interval time.Duration
	// Timeout bounds one refresh (default DefaultTimeout).
	Timeout time.Duration
	// Sort is the initial sort column.
	Sort SortKey
	// NATSURL is shown until the first snapshot arrives.
	NATSURL string
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
}

// Messages the model handles besides keys and window sizes.
type (
	// tickMsg: time for the next refresh.
	tickMsg time.Time
	// snapshotMsg: a refresh succeeded.
	snapshotMsg struct{ snap Snapshot }
	// fetchErrMsg: a refresh failed; the view keeps the last snapshot.
	fetchErrMsg struct {
		err error
		at  time.Time
	}
)

// Model is the bubbletea model of `fedmesh top`. Exactly one refresh loop
// runs: tick → fetch → result → tick; while paused, ticks skip the fetch.
type Model struct {
	fetcher Fetcher
	opts    Options

	snap    Snapshot
	hasSnap bool
	err     error
	errAt   time.Time

	paused   bool
	fetching bool
	sortKey  SortKey
	width    int
	height   int
}

// New builds the model; Init starts the first refresh at once.
func New(f Fetcher, o Options) Model {
	o.defaults()
	return Model{fetcher: f, opts: o, sortKey: o.Sort}
}

// Init implements tea.Model: refresh right away.
func (m Model) Init() tea.Cmd { return func() tea.Msg { return tickMsg(time.Now()) } }

func (m Model) fetch() tea.Cmd {
	f, timeout := m.fetcher, m.opts.Timeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		s, err := f.Fetch(ctx)
		if err != nil {
			return fetchErrMsg{err: err, at: time.Now()}
		}
		return snapshotMsg{snap: s}
	}
}

func (m Model) tick() tea.Cmd {
	return tea.Tick(m.opts.Interval, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// Update implements tea.Model.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "ctrl+c", "esc":
			return m, tea.Quit
		case "s":
			m.sortKey = m.sortKey.Next()
		case "p", " ":
			m.paused = !m.paused
		}
		return m, nil
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tickMsg:
		if m.paused || m.fetching {
			return m, m.tick()
		}
		m.fetching = true
		return m, m.fetch()
	case snapshotMsg:
		m.fetching = false
		s := msg.snap
		if m.hasSnap {
			s = s.WithRate(m.snap)
		}
		m.snap, m.hasSnap, m.err = s, true, nil
		return m, m.tick()
	case fetchErrMsg:
		m.fetching = false
		m.err, m.errAt = msg.err, msg.at
		return m, m.tick()
	}
	return m, nil
}

// Snapshot is the last snapshot received and whether there is one.
func (m Model) Snapshot() (Snapshot, bool) { return m.snap, m.hasSnap }

// Paused reports whether refreshes are paused.
func (m Model) Paused() bool { return m.paused }

// SortKey is the current sort column.
func (m Model) SortKey() SortKey { return m.sortKey }

// StatusLine says what the view is doing: the last fetch error, paused,
// waiting for the first answer, or live.
func (m Model) StatusLine() string {
	var s string
	switch {
	case m.err != nil:
		s = fmt.Sprintf("error %s: %v (retrying every %s", m.errAt.Format("15:04:05"), m.err, m.opts.Interval)
		if m.hasSnap {
			s += ", showing data from " + m.snap.Time.Format("15:04:05")
		}
		s += ")"
	case !m.hasSnap:
		s = "connecting to " + m.opts.NATSURL + "…"
	default:
		s = "live, every " + m.opts.Interval.String()
	}
	if m.paused {
		s = "PAUSED · " + s
	}
	return s
}

// View implements tea.Model.
func (m Model) View() string {
	snap := m.snap
	if !m.hasSnap {
		snap = Snapshot{NATSURL: m.opts.NATSURL}
	}
	body := renderWith(snap, m.width, m.sortKey, colorTheme)
	status := m.StatusLine()
	class := "dim"
	if m.err != nil {
		class = "error"
	}
	help := fmt.Sprintf("q quit · s sort (%s) · p %s", m.sortKey, map[bool]string{false: "pause", true: "resume"}[m.paused])
	if m.width > 0 {
		status = ansi.Truncate(status, m.width, "…")
		help = ansi.Truncate(help, m.width, "…")
	}
	return body + "\n" + colorTheme(class, status) + "\n" + colorTheme("dim", help)
}

// Run shows the live view until the user quits or ctx ends.
func Run(ctx context.Context, f Fetcher, o Options, in io.Reader, out io.Writer) error {
	p := tea.NewProgram(New(f, o), tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	_, err := p.Run()
	if ctx.Err() != nil && errors.Is(err, tea.ErrProgramKilled) {
		return nil // the caller's context ended (SIGINT/SIGTERM): a normal way out
	}
	if errors.Is(err, tea.ErrInterrupted) {
		return nil // ctrl-c outside raw mode
	}
	return err
}

// Once fetches one snapshot and writes it as a plain-text frame.
func Once(ctx context.Context, f Fetcher, o Options, w io.Writer, width int) error {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s, err := f.Fetch(ctx)
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, render(s, width, o.Sort))
	return err
}
