package tui

import (
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// staticSource hands out one Data; Changed never fires unless poked.
type staticSource struct {
	d       Data
	changed chan struct{}
}

func newStatic(d Data) *staticSource { return &staticSource{d: d, changed: make(chan struct{}, 1)} }

func (s *staticSource) Snapshot() Data           { return s.d }
func (s *staticSource) Changed() <-chan struct{} { return s.changed }

func key(s string) tea.KeyMsg {
	types := map[string]tea.KeyType{
		"tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab, "up": tea.KeyUp, "down": tea.KeyDown,
		"left": tea.KeyLeft, "right": tea.KeyRight, "pgup": tea.KeyPgUp, "pgdown": tea.KeyPgDown,
		"home": tea.KeyHome, "end": tea.KeyEnd, "enter": tea.KeyEnter, "esc": tea.KeyEsc,
		"backspace": tea.KeyBackspace, "ctrl+c": tea.KeyCtrlC, "space": tea.KeySpace,
	}
	if kt, ok := types[s]; ok {
		return tea.KeyMsg{Type: kt}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func update(t *testing.T, m Model, msgs ...tea.Msg) (Model, tea.Cmd) {
	t.Helper()
	var cmd tea.Cmd
	for _, msg := range msgs {
		var next tea.Model
		next, cmd = m.Update(msg)
		mm, ok := next.(Model)
		require.True(t, ok, "Update returns a Model")
		m = mm
	}
	return m, cmd
}

func keys(ks ...string) []tea.Msg {
	out := make([]tea.Msg, len(ks))
	for i, k := range ks {
		out[i] = key(k)
	}
	return out
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

func fixtureModel(t *testing.T, o Options) Model {
	t.Helper()
	now := time.Now()
	m := New(newStatic(newMeshFixture(now).data(now)), o, nil)
	m, _ = update(t, m, tea.WindowSizeMsg{Width: 80, Height: 24})
	return m
}

func TestTUIModelSwitchesViews(t *testing.T) {
	tests := []struct {
		name  string
		start View
		keys  []string
		want  View
	}{
		{"tab", ViewCatalog, []string{"tab"}, ViewHealth},
		{"tab wraps", ViewHelp, []string{"tab"}, ViewCatalog},
		{"shift+tab wraps", ViewCatalog, []string{"shift+tab"}, ViewHelp},
		{"arrows", ViewCatalog, []string{"right", "right", "left"}, ViewHealth},
		{"number keys", ViewCatalog, []string{"3"}, ViewRouting},
		{"7 is help", ViewStats, []string{"7"}, ViewHelp},
		{"? opens help", ViewCircuits, []string{"?"}, ViewHelp},
		{"? again goes back", ViewCircuits, []string{"?", "?"}, ViewCircuits},
		{"h opens help", ViewStats, []string{"h"}, ViewHelp},
		{"esc leaves help", ViewPolicies, []string{"h", "esc"}, ViewPolicies},
		{"help from a number goes back to the last view", ViewCatalog, []string{"5", "7", "?"}, ViewStats},
		{"every number", ViewCatalog, []string{"1", "2", "3", "4", "5", "6"}, ViewPolicies},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := update(t, fixtureModel(t, Options{View: tt.start}), keys(tt.keys...)...)
			assert.Equal(t, tt.want, m.Current())
			assert.Contains(t, m.View(), "["+string(rune('1'+tt.want))+" "+tt.want.Title()+"]")
		})
	}
}

func TestTUIModelQuits(t *testing.T) {
	for _, k := range []string{"q", "ctrl+c"} {
		_, cmd := update(t, fixtureModel(t, Options{}), key(k))
		assert.True(t, isQuit(cmd), k)
	}
	for _, k := range []string{"esc", "x", "tab", "s", "p"} {
		_, cmd := update(t, fixtureModel(t, Options{}), key(k))
		assert.False(t, isQuit(cmd), k)
	}
	// While typing a filter, q is a letter of it.
	m, cmd := update(t, fixtureModel(t, Options{}), keys("/", "q")...)
	assert.False(t, isQuit(cmd))
	f, editing := m.Filter()
	assert.Equal(t, "q", f)
	assert.True(t, editing)
}

func TestTUIModelFilter(t *testing.T) {
	m, _ := update(t, fixtureModel(t, Options{View: ViewCatalog}), keys("/", "e", "u", "-")...)
	f, editing := m.Filter()
	assert.Equal(t, "eu-", f)
	assert.True(t, editing)
	view := m.View()
	assert.Contains(t, view, nodeEU)
	assert.NotContains(t, view, nodeAP+"  ", "rows without the text are hidden")
	assert.Contains(t, view, "filter /eu-_")

	m, _ = update(t, m, key("enter"))
	f, editing = m.Filter()
	assert.Equal(t, "eu-", f)
	assert.False(t, editing, "enter keeps the filter")
	assert.Contains(t, m.View(), "filter /eu- (")

	// It applies to every view: the routing tail keeps the eu-west row.
	m, _ = update(t, m, key("3"))
	assert.Contains(t, m.View(), "req-probe")
	assert.NotContains(t, m.View(), "req-ok")

	m, _ = update(t, m, key("esc"))
	f, _ = m.Filter()
	assert.Empty(t, f, "esc clears it")
	assert.Contains(t, m.View(), "req-ok")

	m, _ = update(t, m, keys("/", "x", "y", "backspace", "space")...)
	f, _ = m.Filter()
	assert.Equal(t, "x ", f)
	m, _ = update(t, m, key("esc"))
	f, editing = m.Filter()
	assert.Empty(t, f)
	assert.False(t, editing)
}

func TestTUIModelScrollKeepsTheTableHead(t *testing.T) {
	m := fixtureModel(t, Options{View: ViewPolicies})
	m, _ = update(t, m, tea.WindowSizeMsg{Width: 80, Height: 12})
	top := m.View()
	assert.Contains(t, top, "router.policy")
	m, _ = update(t, m, keys("down", "down", "down", "down", "down", "down", "down")...)
	scrolled := m.View()
	assert.NotContains(t, scrolled, "router.policy", "scrolled past the title")
	assert.Contains(t, scrolled, "FIELD", "the head of the rows shown stays")
	assert.Contains(t, scrolled, "lines 8-")

	m, _ = update(t, m, key("end"))
	assert.Contains(t, m.View(), "acme", "end shows the last rows")
	m, _ = update(t, m, key("home"))
	assert.Equal(t, top, m.View())
	m, _ = update(t, m, key("pgdown"))
	assert.NotEqual(t, top, m.View())
	m, _ = update(t, m, key("pgup"))
	assert.Equal(t, top, m.View())
	m, _ = update(t, m, key("up"))
	assert.Equal(t, top, m.View(), "no scrolling above the top")

	// Each view keeps its own position.
	m, _ = update(t, m, keys("end", "1", "6")...)
	assert.Contains(t, m.View(), "acme")
}

func TestTUIModelPauseAndSort(t *testing.T) {
	now := time.Now()
	src := newStatic(newMeshFixture(now).data(now))
	m := New(src, Options{View: ViewHealth}, nil)
	m, _ = update(t, m, key("p"))
	require.True(t, m.Paused())
	assert.Contains(t, m.View(), "PAUSED")
	m, cmd := update(t, m, dataMsg{data: Data{}})
	assert.NotEmpty(t, m.Data().Nodes, "paused: the display keeps its data")
	assert.NotNil(t, cmd, "and keeps listening")
	m, _ = update(t, m, key("space"))
	assert.False(t, m.Paused())
	m, _ = update(t, m, dataMsg{data: Data{}})
	assert.Empty(t, m.Data().Nodes)

	m = New(src, Options{View: ViewHealth}, nil)
	assert.Contains(t, m.View(), "NODE▼")
	m, _ = update(t, m, keys("s", "s", "s")...)
	assert.Equal(t, SortP50, m.SortKey())
	assert.Contains(t, m.View(), "P50 MS▼")
}

func TestTUIModelRedrawsOnChange(t *testing.T) {
	now := time.Now()
	src := newStatic(Data{})
	stop := make(chan struct{})
	m := New(src, Options{}, stop)
	assert.Contains(t, m.View(), "no nodes registered")
	src.d = newMeshFixture(now).data(now)
	src.changed <- struct{}{}
	msg := m.wait()()
	require.IsType(t, dataMsg{}, msg)
	m, cmd := update(t, m, msg)
	assert.Contains(t, m.View(), nodeUS)
	assert.NotNil(t, cmd, "waits for the next change")

	close(stop)
	assert.Nil(t, m.wait()(), "the wait ends with the program")
}

func TestTUIModelWindowSizes(t *testing.T) {
	for _, size := range []struct{ w, h int }{{80, 24}, {60, 20}, {120, 40}} {
		for v := range numViews {
			m, _ := update(t, fixtureModel(t, Options{View: v}), tea.WindowSizeMsg{Width: size.w, Height: size.h})
			out := m.View()
			lines := strings.Split(out, "\n")
			assert.Len(t, lines, size.h, "%s at %dx%d: exactly the screen, or bubbletea drops the header", v, size.w, size.h)
			assert.Contains(t, lines[0], "fedmesh top")
			for _, l := range lines {
				assert.LessOrEqual(t, lipgloss.Width(l), size.w, "%s: %q", v, l)
			}
			assert.NotContains(t, out, "…")
		}
	}
}

// Every key the model acts on is in the help, and every key the help
// lists does something.
func TestTUIHelpListsEveryKey(t *testing.T) {
	m := fixtureModel(t, Options{View: ViewHelp})
	help := m.View()
	tests := []struct {
		key    string
		inHelp string // how the help spells it
	}{
		{"1", "1-7"}, {"2", "1-7"}, {"3", "1-7"}, {"4", "1-7"}, {"5", "1-7"}, {"6", "1-7"}, {"7", "1-7"},
		{"tab", "tab"}, {"shift+tab", "shift+tab"}, {"right", "→"}, {"left", "←"},
		{"up", "↑"}, {"down", "↓"}, {"k", "k"}, {"j", "j"},
		{"pgup", "pgup"}, {"pgdown", "pgdown"}, {"ctrl+u", "ctrl+u"}, {"ctrl+d", "ctrl+d"},
		{"home", "home"}, {"end", "end"}, {"g", "g"}, {"G", "G"},
		{"/", "/"}, {"s", "s"}, {"p", "p"}, {"space", "space"}, {"?", "?"}, {"h", "h"},
		{"esc", "esc"}, {"q", "q"}, {"ctrl+c", "ctrl+c"},
	}
	ctrl := map[string]tea.KeyType{"ctrl+u": tea.KeyCtrlU, "ctrl+d": tea.KeyCtrlD}
	keyCol := map[string]bool{}
	for _, k := range helpKeys {
		for _, f := range strings.Fields(strings.NewReplacer("(", " ", ")", " ", "/", " / ").Replace(k[0])) {
			keyCol[f] = true
		}
	}
	keyCol["/"] = true
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			assert.Contains(t, help, tt.inHelp)
			if tt.inHelp != "1-7" {
				assert.True(t, keyCol[tt.inHelp], "%q in the KEY column", tt.inHelp)
			}
			msg := key(tt.key)
			if kt, ok := ctrl[tt.key]; ok {
				msg = tea.KeyMsg{Type: kt}
			}
			// From a scrolled, filtered Policies view on a short screen, so
			// that every key has something to change.
			start := fixtureModel(t, Options{View: ViewPolicies})
			start, _ = update(t, start, tea.WindowSizeMsg{Width: 80, Height: 12}, key("down"), key("down"))
			start.filter = "a"
			if tt.key == "6" { // already there: come from elsewhere
				start, _ = update(t, start, key("1"))
			}
			next, cmd := update(t, start, msg)
			changed := cmd != nil || next.View() != start.View() || next.Paused() != start.Paused() ||
				next.SortKey() != start.SortKey() || next.editing != start.editing
			assert.True(t, changed, "key %s does something", tt.key)
		})
	}
}
