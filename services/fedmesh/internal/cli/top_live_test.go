package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/tui"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// screenBreak splits what the program wrote to its terminal into lines:
// the renderer rewrites every changed line whole, between cursor moves.
var screenBreak = regexp.MustCompile(`\r|\n|\x1b\[[0-9;]*[A-HJKf]`)

// screenLine is the first line the program wrote that holds every part in
// order, or "".
func screenLine(out []byte, parts ...string) string {
next:
	for _, l := range screenBreak.Split(string(out), -1) {
		rest := l
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				continue next
			}
			rest = rest[i+len(p):]
		}
		return l
	}
	return ""
}

// The live program (bubbletea, in an 80×24 terminal) on the real demo
// mesh, nothing published by the test: every view is reached by its key
// and shows what the services wrote. The routing tail is the router's own
// fed.router.decisions joined with the nodes' outcomes.
func TestTopLiveEveryViewOnARealMesh(t *testing.T) {
	s := startDemoMesh(t)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	infer := func(id string) (*client.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Model: devmesh.DemoChatModel,
			Body: []byte("hello"), Tenant: "acme", RequestID: id})
	}
	warm := 0
	natsembed.Eventually(t, 10*time.Second, func() error {
		warm++
		_, err := infer(fmt.Sprintf("warm-%d", warm))
		return err
	})
	set := natsembed.BucketsForTest(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = set.Config.Put(ctx, record.ConfigKeyPolicy, []byte(`{"stratgy":"round_robin"}`))
	require.NoError(t, err)

	tnc := natsembed.ConnectForTest(t, s, nats.MaxReconnects(-1))
	live := tui.NewLive(tnc, tui.LiveOptions{Subjects: subject.Default, Interval: 200 * time.Millisecond, URL: s.ClientURL(),
		Stats: func(ctx context.Context) (record.Stats, error) { return fetchStats(ctx, tnc, subject.Default) }})
	require.NoError(t, live.Start(context.Background()))
	t.Cleanup(func() { assert.NoError(t, live.Stop()) })
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	require.NoError(t, live.Ready(rctx))

	// Requests served while top listens: their rows come from the router.
	var served []*client.Response
	for i := range 3 {
		resp, err := infer(fmt.Sprintf("live-%d", i))
		require.NoError(t, err)
		served = append(served, resp)
	}

	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	tm := teatest.NewTestModel(t, tui.New(live, tui.Options{View: tui.ViewCatalog}, stop), teatest.WithInitialTermSize(80, 24))
	// waitFor waits until the screen has shown every line: each a list of
	// parts that one line holds in order.
	waitFor := func(lines ...[]string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
			for _, parts := range lines {
				if screenLine(b, parts...) == "" {
					return false
				}
			}
			return true
		}, teatest.WithDuration(10*time.Second), teatest.WithCheckInterval(50*time.Millisecond))
	}
	press := func(k string) {
		types := map[string]tea.KeyType{"tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab, "right": tea.KeyRight,
			"left": tea.KeyLeft, "esc": tea.KeyEsc, "enter": tea.KeyEnter}
		if kt, ok := types[k]; ok {
			tm.Send(tea.KeyMsg{Type: kt})
			return
		}
		tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)})
	}
	header := []string{"fedmesh top", "connected"}

	// 1 Catalog: nodes with region, clearance and cost; models; regions.
	waitFor(header, []string{"[1 Catalog]"}, []string{"NODE", "REGION", "CLEARANCE", "COST"},
		[]string{"us-west-gpu-1", "us-west", "internal", "0.60"}, []string{"eu-west-gpu-1", "eu-west", "confidential", "0.80"},
		[]string{"ap-south-cpu-1", "ap-south", "0.20"}, []string{devmesh.DemoCodeModel, "code,generate"})

	// 2 Health (tab): state, latency and load per node, and per model.
	press("tab")
	waitFor([]string{"[2 Health]"}, []string{"NODE", "STATE", "P50 MS", "P99 MS", "IN FLIGHT"},
		[]string{"us-west-gpu-1", "/16"}, []string{"per model"}, []string{"NODE", "MODEL", "P50 MS", "P99 MS", "TTFT MS", "TPOT MS"},
		[]string{served[0].Node, devmesh.DemoChatModel})

	// 3 Routing (number key): the router's decisions with their outcomes.
	press("3")
	rows := make([][]string, 0, len(served)+2)
	for _, r := range served {
		rows = append(rows, []string{r.RequestID, r.Node, "ok "})
	}
	waitFor(append(rows, []string{"[3 Routing]"}, []string{"REQUEST", "NODE", "DECIDED BY", "OUTCOME"})...)

	// 4 Circuits (arrow): every circuit closed.
	press("right")
	waitFor([]string{"[4 Circuits]"}, []string{"NODE", "CIRCUIT", "FAILS", "HALF-OPEN IN", "PROBE"},
		[]string{"us-west-gpu-1", "closed"}, []string{"eu-west-gpu-1", "closed"}, []string{"ap-south-cpu-1", "closed"})

	// 5 Stats: overall, per node, per tenant.
	press("5")
	want := fmt.Sprint(warm + len(served))
	waitFor([]string{"[5 Stats]"}, []string{"requests " + want}, []string{"per node"}, []string{"per tenant"},
		[]string{"TENANT", "REQS", "FAILS", "REQ/S", "P99 MS"}, []string{"acme", want, "0"})

	// 6 Policies (shift+tab from Help): the rejected value and why.
	press("7")
	waitFor([]string{"[7 Help]"}, []string{"KEY", "ACTION"}, []string{"tab / shift+tab"}, []string{"q / ctrl+c", "quit"})
	press("shift+tab")
	waitFor([]string{"[6 Policies]"}, []string{"router.policy"}, []string{"REJECTED: routers keep their base policy"},
		[]string{`unknown field "stratgy"`}, []string{"strategy", record.DefaultPolicy().Strategy})

	// ? and esc, / filter, left arrow.
	press("?")
	waitFor([]string{"[7 Help]"})
	press("esc")
	waitFor([]string{"[6 Policies]"})
	press("left")
	waitFor([]string{"[5 Stats]"})
	press("1")
	tm.Type("/eu-west")
	press("enter")
	waitFor([]string{"filter /eu-west"}, []string{"eu-west-gpu-1", "eu-west"})

	press("q")
	final, ok := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(tui.Model)
	require.True(t, ok)
	assert.Equal(t, tui.ViewCatalog, final.Current())
	out := final.View()
	assert.Regexp(t, `(?m)^eu-west-gpu-1 +eu-west `, out)
	assert.NotRegexp(t, `(?m)^us-west-gpu-1 `, out, "its node row is filtered out")
	assert.NotContains(t, out, "…", "no cell cut short")
	assert.Len(t, strings.Split(out, "\n"), 24)
}
