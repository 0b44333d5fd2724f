package tui

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
)

// fakeFetcher answers every Fetch with snap or err and counts the calls.
type fakeFetcher struct {
	snap  Snapshot
	err   error
	calls atomic.Int32
}

func (f *fakeFetcher) Fetch(ctx context.Context) (Snapshot, error) {
	f.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	return f.snap, f.err
}

func newTestModel(f Fetcher) Model {
	return New(f, Options{Interval: time.Millisecond, Timeout: time.Second, NATSURL: "nats://test:4222"})
}

func key(s string) tea.KeyMsg {
	switch s {
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func update(t *testing.T, m Model, msg tea.Msg) (Model, tea.Cmd) {
	t.Helper()
	next, cmd := m.Update(msg)
	mm, ok := next.(Model)
	require.True(t, ok, "Update returns a Model")
	return mm, cmd
}

// isQuit runs cmd and reports whether it asks the program to quit.
func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

func TestModelStoresSnapshot(t *testing.T) {
	m := newTestModel(&fakeFetcher{})
	_, has := m.Snapshot()
	assert.False(t, has)
	assert.Contains(t, m.View(), "connecting to nats://test:4222")

	s := sample()
	m, cmd := update(t, m, snapshotMsg{snap: s})
	got, has := m.Snapshot()
	require.True(t, has)
	assert.Equal(t, s.Nodes, got.Nodes)
	assert.Equal(t, s.Mesh, got.Mesh)
	assert.NotNil(t, cmd, "the next tick is scheduled")
	view := m.View()
	for _, n := range s.Nodes {
		assert.Contains(t, view, n.ID)
	}
	assert.Contains(t, m.StatusLine(), "live")

	// A second snapshot gets the request rate from the first.
	s2 := s
	s2.Time = s.Time.Add(2 * time.Second)
	s2.Totals.TotalRequests += 10
	m, _ = update(t, m, snapshotMsg{snap: s2})
	got, _ = m.Snapshot()
	assert.True(t, got.RateKnown)
	assert.InDelta(t, 5.0, got.ReqPerSec, 1e-9)
}

func TestModelKeys(t *testing.T) {
	tests := []struct {
		key   string
		quits bool
	}{
		{"q", true}, {"ctrl+c", true}, {"esc", true}, {"s", false}, {"p", false}, {"x", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, cmd := update(t, newTestModel(&fakeFetcher{}), key(tt.key))
			assert.Equal(t, tt.quits, isQuit(cmd))
		})
	}
}

func TestModelSortKeyCycles(t *testing.T) {
	m := newTestModel(&fakeFetcher{})
	assert.Equal(t, SortNode, m.SortKey())
	m, _ = update(t, m, key("s"))
	assert.Equal(t, SortRegion, m.SortKey())
	for range numSortKeys - 1 {
		m, _ = update(t, m, key("s"))
	}
	assert.Equal(t, SortNode, m.SortKey(), "wraps around")
}

func TestModelTickFetches(t *testing.T) {
	f := &fakeFetcher{snap: sample()}
	m := newTestModel(f)
	m, cmd := update(t, m, m.Init()())
	require.NotNil(t, cmd)
	msg := cmd()
	assert.Equal(t, int32(1), f.calls.Load())
	require.IsType(t, snapshotMsg{}, msg)

	// While a fetch is in flight another tick does not start a second one.
	_, cmd = update(t, m, tickMsg(time.Now()))
	assert.IsType(t, tickMsg{}, cmd(), "only the next tick")
	assert.Equal(t, int32(1), f.calls.Load())

	m, cmd = update(t, m, msg)
	_, has := m.Snapshot()
	assert.True(t, has)
	assert.IsType(t, tickMsg{}, cmd(), "after a result, the next tick")
}

func TestModelPauseSkipsFetch(t *testing.T) {
	f := &fakeFetcher{snap: sample()}
	m := newTestModel(f)
	m, _ = update(t, m, key("p"))
	require.True(t, m.Paused())
	assert.Contains(t, m.StatusLine(), "PAUSED")
	assert.Contains(t, m.View(), "p resume")

	m, cmd := update(t, m, tickMsg(time.Now()))
	require.NotNil(t, cmd)
	assert.IsType(t, tickMsg{}, cmd(), "a paused tick only schedules the next tick")
	assert.Equal(t, int32(0), f.calls.Load(), "a paused tick does not fetch")

	m, _ = update(t, m, key("p"))
	require.False(t, m.Paused())
	_, cmd = update(t, m, tickMsg(time.Now()))
	assert.IsType(t, snapshotMsg{}, cmd())
	assert.Equal(t, int32(1), f.calls.Load(), "resumed: the tick fetches")
}

func TestModelFetchErrorInStatusLine(t *testing.T) {
	f := &fakeFetcher{err: errors.New("request fed.catalog.list: nats: no responders available for request")}
	m := newTestModel(f)
	m, cmd := update(t, m, tickMsg(time.Now()))
	msg := cmd()
	require.IsType(t, fetchErrMsg{}, msg)
	m, cmd = update(t, m, msg)
	assert.NotNil(t, cmd, "keeps retrying")
	assert.IsType(t, tickMsg{}, cmd())
	assert.Contains(t, m.StatusLine(), "no responders")
	assert.Contains(t, m.StatusLine(), "retrying")
	assert.Contains(t, m.View(), "no responders")

	// With an earlier snapshot, the view keeps it and says how old it is.
	m = newTestModel(f)
	m, _ = update(t, m, snapshotMsg{snap: sample()})
	m, _ = update(t, m, fetchErrMsg{err: f.err, at: time.Now()})
	assert.Contains(t, m.View(), "a-healthy")
	assert.Contains(t, m.StatusLine(), "showing data from")

	// The next good answer clears the error.
	m, _ = update(t, m, snapshotMsg{snap: sample()})
	assert.NotContains(t, m.StatusLine(), "no responders")
	assert.Equal(t, record.MeshDegraded, m.snap.Mesh)
}

func TestModelWindowSize(t *testing.T) {
	m := newTestModel(&fakeFetcher{})
	m, _ = update(t, m, snapshotMsg{snap: sample()})
	m, _ = update(t, m, tea.WindowSizeMsg{Width: 50, Height: 20})
	m, _ = update(t, m, fetchErrMsg{err: errors.New(strings.Repeat("very long error ", 10)), at: time.Now()})
	for _, l := range strings.Split(m.View(), "\n") {
		assert.LessOrEqual(t, lipgloss.Width(l), 50, "line %q", l)
	}
}

func TestOnceWritesPlainFrame(t *testing.T) {
	var b strings.Builder
	require.NoError(t, Once(context.Background(), &fakeFetcher{snap: sample()}, Options{Sort: SortFailures}, &b, 0))
	assert.Equal(t, render(sample(), 0, SortFailures), b.String())
	assert.NotContains(t, b.String(), "\x1b[", "no escape codes")

	err := Once(context.Background(), &fakeFetcher{err: errors.New("boom")}, Options{}, &b, 0)
	assert.EqualError(t, err, "boom")
}
