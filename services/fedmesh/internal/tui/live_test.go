package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const testInterval = 100 * time.Millisecond

// testMesh is a real server whose buckets and subjects hold what the
// services would have written and published (newMeshFixture); fed.stats is
// answered with the fixture's first answer (asked counts the requests),
// and its later ones come as health's fed.health.stats events.
type testMesh struct {
	s     *server.Server
	nc    *nats.Conn // the "services'" connection
	set   *buckets.Set
	subj  subject.Space
	f     meshFixture
	asked atomic.Int64
}

func startTestMesh(t *testing.T, s *server.Server) *testMesh {
	t.Helper()
	m := &testMesh{s: s, subj: subject.Default, f: newMeshFixture(time.Now())}
	m.nc = natsembed.ConnectForTest(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	m.set = natsembed.BucketsForTest(t, m.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range m.f.nodes {
		_, err := m.set.Catalog.Put(ctx, buckets.NodeKey(n.NodeID), mustJSON(n))
		require.NoError(t, err)
	}
	for _, h := range m.f.health {
		_, err := m.set.Health.Put(ctx, buckets.NodeKey(h.NodeID), mustJSON(h))
		require.NoError(t, err)
	}
	// health's own stats keys sit in the same bucket: top must skip them.
	_, err := m.set.Health.Put(ctx, buckets.StatsPrefix+"mesh", []byte(`{"mesh":{"total_requests":1}}`))
	require.NoError(t, err)
	for _, c := range m.f.config {
		_, err := m.set.Config.Put(ctx, c[0], []byte(c[1]))
		require.NoError(t, err)
	}
	_, err = m.nc.Subscribe(m.subj.Stats(), func(msg *nats.Msg) {
		m.asked.Add(1)
		_ = msg.Respond(mustJSON(m.f.stats[0]))
	})
	require.NoError(t, err)
	require.NoError(t, m.nc.Flush())
	return m
}

// publishEvents sends the fixture's events as routers and nodes would.
func (m *testMesh) publishEvents(t *testing.T) {
	t.Helper()
	require.NoError(t, wire.PublishJSON(m.nc, m.subj.Decisions(), m.f.decisions))
	for _, o := range m.f.outcomes {
		require.NoError(t, wire.PublishJSON(m.nc, m.subj.Outcome(o.NodeID), o))
	}
	for _, u := range m.f.unplaced {
		require.NoError(t, wire.PublishJSON(m.nc, m.subj.Unplaced(), u))
	}
	for _, hb := range m.f.beats {
		require.NoError(t, wire.PublishJSON(m.nc, m.subj.Heartbeat(hb.NodeID), hb))
	}
	for _, st := range m.f.stats[1:] {
		m.publishStats(t, "health-1", st)
	}
	require.NoError(t, m.nc.Flush())
}

// publishStats sends a stats event as health instance from would.
func (m *testMesh) publishStats(t *testing.T, from string, st record.Stats) {
	t.Helper()
	require.NoError(t, wire.PublishJSON(m.nc, m.subj.HealthStats(), record.StatsEvent{Health: from, TS: time.Now(), Stats: st}))
}

// askStats is fed.stats as the cli asks it.
func askStats(nc *nats.Conn, subj subject.Space) func(context.Context) (record.Stats, error) {
	return func(ctx context.Context) (record.Stats, error) {
		var st record.Stats
		msg, err := nc.RequestWithContext(ctx, subj.Stats(), nil)
		if err != nil {
			return st, fmt.Errorf("request %s: %w", subj.Stats(), err)
		}
		return st, json.Unmarshal(msg.Data, &st)
	}
}

// startLive runs a Live source on its own connection to s (reconnecting
// forever, as `fedmesh top` does) and waits until it has loaded the mesh.
func startLive(t *testing.T, s *server.Server) *Live {
	t.Helper()
	nc := natsembed.ConnectForTest(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	l := NewLive(nc, LiveOptions{Subjects: subject.Default, Interval: testInterval, Timeout: time.Second,
		URL: s.ClientURL(), Stats: askStats(nc, subject.Default)})
	require.NoError(t, l.Start(context.Background()))
	t.Cleanup(func() {
		if !nc.IsConnected() {
			nc.Close() // as top does: no waiting for consumer deletes that cannot reach a server
		}
		assert.NoError(t, l.Stop())
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, l.Ready(ctx))
	return l
}

// frameOf renders view v of l's data as `top --once` does.
func frameOf(l *Live, v View, width int) string {
	d := l.Snapshot()
	s, _ := frame{view: v, width: width, now: d.Taken, th: plainTheme}.render(&d)
	return s
}

// eventually waits until every part is in view v's frame.
func eventually(t *testing.T, l *Live, v View, parts ...string) string {
	t.Helper()
	var out string
	natsembed.Eventually(t, 5*time.Second, func() error {
		out = frameOf(l, v, 0)
		for _, p := range parts {
			if !strings.Contains(out, p) {
				return fmt.Errorf("%s view lacks %q:\n%s", v, p, out)
			}
		}
		return nil
	})
	return out
}

func TestTUILiveViewsOnARealServer(t *testing.T) {
	m := startTestMesh(t, natsembed.StartForTest(t))
	l := startLive(t, m.s)
	m.publishEvents(t)
	// Wait for the events to be joined and the stats event to be in.
	natsembed.Eventually(t, 5*time.Second, func() error {
		d := l.Snapshot()
		joined := 0
		for _, r := range d.Routes {
			if r.Finished() {
				joined++
			}
		}
		_, rateKnown := d.Stats.Overall.LastRate()
		return natsembed.Check(len(d.Routes) == 4 && joined == 3 && rateKnown && len(d.Models) == 2 &&
			d.node(nodeUS) != nil && d.node(nodeUS).Heartbeat != nil,
			"routes %d (joined %d), rate known %v, models %d", len(d.Routes), joined, rateKnown, len(d.Models))
	})

	for v := range numViews {
		want := viewWants[v]
		rows := want.rows
		text := want.text
		switch v {
		case ViewStats: // rates depend on the real interval between the answer and the event
			rows = [][]string{{nodeUS, "100", "250"}, {nodeAP, "15", "9", "9100"}, {"acme", "90"}, {"beta", "30", "9"}}
			text = []string{"requests 120", "unplaced 5 (403:1 503:4)"}
		case ViewCircuits: // the countdown moves
			rows = [][]string{{nodeUS, "closed"}, {nodeEU, "half_open", "yes"}, {nodeAP, "open", " 5 ", "s "}}
		}
		for _, width := range []int{0, 80} {
			t.Run(fmt.Sprintf("%s/%d", v, width), func(t *testing.T) {
				out := frameOf(l, v, width)
				assert.Contains(t, out, "connected")
				assert.NotContains(t, out, "…")
				for _, h := range want.heads {
					assert.Contains(t, out, h)
				}
				for _, cells := range rows {
					rowWith(t, out, cells...)
				}
				for _, s := range text {
					assert.Contains(t, strings.Join(strings.Fields(out), " "), s)
				}
			})
		}
	}

	t.Run("once", func(t *testing.T) {
		var b bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, Once(ctx, l, OnceOptions{View: ViewRouting, Width: 80}, &b))
		out := b.String()
		assert.Contains(t, out, "[3 Routing]")
		rowWith(t, out, "req-ok", nodeUS, "latency", "ok 120ms")
		assert.NotContains(t, out, "\x1b[", "plain text")
	})
}

// Issue 17: top asked fed.stats every interval. It now asks once, at
// start, and then follows health's fed.health.stats events: the view
// changes while nobody asks, and a quiet mesh's rate falls to zero.
func TestTUILiveStatsFollowTheEvents(t *testing.T) {
	m := startTestMesh(t, natsembed.StartForTest(t))
	l := startLive(t, m.s)
	eventually(t, l, ViewStats, "requests 100")
	require.Equal(t, int64(1), m.asked.Load(), "one fed.stats request at start")

	st := m.f.stats[0]
	st.TotalRequests, st.SuccessfulRequests = 777, 700
	m.publishStats(t, "health-1", st)
	eventually(t, l, ViewStats, "requests 777", "ok 700")
	// Another instance, a little behind, while the followed one is alive:
	// not taken (the counters would go back and forth).
	behind := st
	behind.TotalRequests = 770
	m.publishStats(t, "health-2", behind)
	st.TotalRequests = 800
	m.publishStats(t, "health-1", st)
	out := eventually(t, l, ViewStats, "requests 800")
	r, ok := l.Snapshot().Stats.Overall.LastRate()
	assert.True(t, ok && r > 0, "rate between two events: %v %v", r, ok)
	assert.NotContains(t, out, "requests 770")

	// Quiet: zero-rate points, and still nobody asks.
	natsembed.Eventually(t, 5*time.Second, func() error {
		r, ok := l.Snapshot().Stats.Overall.LastRate()
		return natsembed.Check(ok && r == 0, "rate %v (known %v) while quiet", r, ok)
	})
	d := l.Snapshot()
	assert.Equal(t, int64(800), d.Stats.Stats.TotalRequests)
	assert.Contains(t, frameOf(l, ViewStats, 0), "last stats "+d.Stats.At.Format("15:04:05"), "the counters' age is shown")
	assert.Equal(t, int64(1), m.asked.Load(), "top asked fed.stats after start")

	// The followed instance stays quiet: another's event is taken.
	behind.TotalRequests = 900
	m.publishStats(t, "health-2", behind)
	eventually(t, l, ViewStats, "requests 900")

	// A stats event that does not decode is counted, not shown.
	require.NoError(t, m.nc.Publish(m.subj.HealthStats(), []byte(`{"health":"h","stats":{"total_requests":-5}}`)))
	out = eventually(t, l, ViewStats, "ignored (did not decode)", "fed.health.stats", "negative count")
	assert.Contains(t, out, "requests 900")
}

func TestTUILiveFollowsChangesAsTheyHappen(t *testing.T) {
	m := startTestMesh(t, natsembed.StartForTest(t))
	l := startLive(t, m.s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("a good policy goes in force", func(t *testing.T) {
		_, err := m.set.Config.Put(ctx, record.ConfigKeyPolicy, []byte(`{"strategy":"power_of_two","max_retries":1}`))
		require.NoError(t, err)
		out := eventually(t, l, ViewPolicies, "rev 5", "in force")
		rowWith(t, out, "strategy", "power_of_two")
		rowWith(t, out, "max_retries", "1 *", "3")
		assert.Contains(t, out, badPolicyReason, "the earlier rejection stays on show")
	})
	t.Run("a rejected tenants value keeps the last good one", func(t *testing.T) {
		_, err := m.set.Config.Put(ctx, record.ConfigKeyTenants, []byte(`{"acme":{"requests_per_second":-3}}`))
		require.NoError(t, err)
		out := eventually(t, l, ViewPolicies, "REJECTED: routers keep rev 4", "tenants.acme.requests_per_second = -3")
		rowWith(t, out, "acme", "5")
		assert.Contains(t, out, `rejected value {"acme":{"requests_per_second":-3}}`)
	})
	t.Run("a deleted regions key returns to no rules", func(t *testing.T) {
		require.NoError(t, m.set.Config.Delete(ctx, record.ConfigKeyRegions))
		eventually(t, l, ViewPolicies, "deleted: routers apply no region rules", "no regions in force")
		out := eventually(t, l, ViewCatalog, "confidential")
		rowWith(t, out, nodeEU, "confidential", "0.80")
	})
	t.Run("health changes show at once", func(t *testing.T) {
		h := m.f.health[2]
		h.Circuit, h.State, h.ConsecutiveFailures, h.CircuitOpenedAt = record.CircuitHalfOpen, record.StateDegraded, 0, time.Now().Add(-31*time.Second)
		_, err := m.set.Health.Put(ctx, buckets.NodeKey(nodeAP), mustJSON(h))
		require.NoError(t, err)
		natsembed.Eventually(t, 5*time.Second, func() error {
			row := rowOfPrefix(frameOf(l, ViewCircuits, 0), nodeAP+" ")
			return natsembed.Check(strings.Contains(row, "half_open") && strings.Contains(row, " no ") &&
				strings.Contains(row, "0/3"), "row %q", row)
		})
		// A request placed on it is the probe in flight until its outcome.
		d := record.Decision{RequestID: "probe-1", Node: nodeAP, Score: 0.4, Attempts: 1, Time: time.Now()}
		require.NoError(t, wire.PublishJSON(m.nc, m.subj.Decisions(), record.Decisions{Router: "r2", Decisions: []record.Decision{d}}))
		natsembed.Eventually(t, 5*time.Second, func() error {
			row := rowOfPrefix(frameOf(l, ViewCircuits, 0), nodeAP+" ")
			return natsembed.Check(strings.Contains(row, " yes "), "probe not in flight: %q", row)
		})
		require.NoError(t, wire.PublishJSON(m.nc, m.subj.Outcome(nodeAP), record.Outcome{Kind: record.OutcomeCompleted,
			NodeID: nodeAP, RequestID: "probe-1", OK: true, LatencyMs: 80, Time: time.Now()}))
		natsembed.Eventually(t, 5*time.Second, func() error {
			row := rowOfPrefix(frameOf(l, ViewCircuits, 0), nodeAP+" ")
			return natsembed.Check(strings.Contains(row, " no "), "probe still in flight: %q", row)
		})
		rowWith(t, frameOf(l, ViewRouting, 0), "probe-1", nodeAP, "ok 80ms")
	})
	t.Run("a deregistered node leaves the catalog", func(t *testing.T) {
		require.NoError(t, m.set.Catalog.Delete(ctx, buckets.NodeKey(nodeUS)))
		natsembed.Eventually(t, 5*time.Second, func() error {
			out := frameOf(l, ViewCatalog, 0)
			return natsembed.Check(!strings.Contains(rowOfPrefix(out, nodeUS), "us-west"), "still listed:\n%s", out)
		})
		rowWith(t, frameOf(l, ViewHealth, 0), nodeUS, "healthy", " no") // fed_health still knows it
	})
	t.Run("bad events are counted, not shown", func(t *testing.T) {
		require.NoError(t, m.nc.Publish(m.subj.Decisions(), []byte(`{"router":"r","decisions":[{"node":"a.b"}]}`)))
		require.NoError(t, m.nc.Publish(m.subj.Outcome("n1"), []byte(`not json`)))
		out := eventually(t, l, ViewRouting, "ignored (did not decode)", "fed.router.decisions", "fed.outcome.*")
		assert.NotContains(t, out, "a.b")
	})
}

func rowOfPrefix(frame, prefix string) string {
	for _, l := range strings.Split(frame, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// The header tells the truth about the connection: "disconnected,
// reconnecting" while the server is gone (never the last mesh state), and
// live data again once it is back.
func TestTUILiveShowsTheConnectionState(t *testing.T) {
	dir := t.TempDir()
	s, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: dir, Name: "top-test"})
	require.NoError(t, err)
	port := s.Addr().(interface{ String() string }).String()
	t.Cleanup(func() { s.Shutdown() })
	m := startTestMesh(t, s)
	l := startLive(t, s)
	eventually(t, l, ViewCatalog, "connected", "mesh degraded")

	s.Shutdown()
	s.WaitForShutdown()
	var header string
	natsembed.Eventually(t, 5*time.Second, func() error {
		header = strings.SplitN(frameOf(l, ViewCatalog, 80), "\n", 2)[0]
		return natsembed.Check(strings.Contains(header, "disconnected, reconnecting"), "header %q", header)
	})
	assert.NotContains(t, header, "mesh degraded", "no mesh state while disconnected")
	rowWith(t, frameOf(l, ViewCatalog, 80), nodeUS, "us-west") // the last data stays on show

	// The same server (port and storage) comes back.
	var p int
	_, err = fmt.Sscanf(port[strings.LastIndexByte(port, ':')+1:], "%d", &p)
	require.NoError(t, err)
	s2, err := natsembed.Start(natsembed.Options{Port: p, StoreDir: dir, Name: "top-test"})
	require.NoError(t, err)
	t.Cleanup(func() { s2.Shutdown(); s2.WaitForShutdown() })
	eventually(t, l, ViewCatalog, "connected", "mesh degraded")

	// Watches and subscriptions carry on after the reconnect.
	natsembed.Eventually(t, 5*time.Second, func() error { return natsembed.Check(m.nc.IsConnected(), "writer not back") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := m.f.nodes[0]
	n.NodeID, n.Region = "late-node", "sa-east"
	_, err = m.set.Catalog.Put(ctx, buckets.NodeKey(n.NodeID), mustJSON(n))
	require.NoError(t, err)
	eventually(t, l, ViewCatalog, "late-node", "sa-east")
	natsembed.Eventually(t, 5*time.Second, func() error {
		d := record.Decision{RequestID: "after-reconnect", Node: nodeEU, Score: 1, Attempts: 1, Time: time.Now()}
		if err := wire.PublishJSON(m.nc, m.subj.Decisions(), record.Decisions{Router: "r", Decisions: []record.Decision{d}}); err != nil {
			return err
		}
		return natsembed.Check(strings.Contains(frameOf(l, ViewRouting, 0), "after-reconnect"), "no decision after the reconnect")
	})
	require.NoError(t, l.Stop(), "stops while the server is still up") // its watch consumers are deleted at once
}

// The whole program on a live source, driven through bubbletea with keys
// and a window size as a terminal would.
func TestTUIProgramOnALiveMesh(t *testing.T) {
	m := startTestMesh(t, natsembed.StartForTest(t))
	l := startLive(t, m.s)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	tm := teatest.NewTestModel(t, New(l, Options{View: ViewCatalog}, stop), teatest.WithInitialTermSize(80, 24))
	waitFor := func(parts ...string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
			for _, p := range parts {
				if !bytes.Contains(b, []byte(p)) {
					return false
				}
			}
			return true
		}, teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	}
	waitFor("fedmesh top", "connected", "mesh degraded", "[1 Catalog]", nodeUS, "CLEARANCE")

	m.publishEvents(t)
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("3")})
	waitFor("[3 Routing]", "DECIDED BY", "req-ok", "ok 120ms")

	tm.Send(tea.KeyMsg{Type: tea.KeyTab})
	waitFor("[4 Circuits]", "HALF-OPEN IN")

	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("?")})
	waitFor("[7 Help]", "shift+tab", "q / ctrl+c")

	tm.Send(tea.KeyMsg{Type: tea.KeyEsc})
	waitFor("[4 Circuits]")

	tm.Type("/eu-")
	waitFor("filter /eu-_")
	tm.Send(tea.KeyMsg{Type: tea.KeyEnter})

	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	final, ok := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(Model)
	require.True(t, ok)
	assert.Equal(t, ViewCircuits, final.Current())
	f, editing := final.Filter()
	assert.Equal(t, "eu-", f)
	assert.False(t, editing)
	out := final.View()
	assert.Contains(t, out, nodeEU)
	assert.NotContains(t, out, nodeUS, "filtered out")
	lines := strings.Split(out, "\n")
	assert.Len(t, lines, 24)
	assert.Contains(t, lines[0], "connected")
}
