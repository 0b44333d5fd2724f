package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
)

// harness is one run: the mesh, the load and a monitoring connection.
type harness struct {
	o       *Options
	m       *mesh
	l       *load
	nc      *nats.Conn // the harness's own connection (all servers)
	t0      time.Time
	logf    func(string, ...any)
	victims []string // nodes hit so far, avoided by later node faults when possible
}

// fault is one of the six faults: run does it, restores what it broke and
// notes what it saw; it returns by end (the phase's end) or soon after.
type fault struct {
	name string
	hold func(o *Options) time.Duration // least time the phase needs
	run  func(ctx context.Context, h *harness, f *faultRun, end time.Time)
}

var faults = []fault{
	{"SIGKILL node agent mid-stream", func(o *Options) time.Duration { return o.RestartDelay + 2*time.Second }, killNode},
	{"SIGTERM node agent (drain)", func(o *Options) time.Duration { return o.RestartDelay + 2*time.Second }, drainNode},
	{"SIGKILL router", func(o *Options) time.Duration { return o.RestartDelay + time.Second }, killRouter},
	{"SIGKILL JetStream meta leader", func(o *Options) time.Duration { return o.ServerDown + 4*time.Second }, killMetaLeader},
	{"SIGSTOP node agent", func(o *Options) time.Duration { return o.StopFor + 4*time.Second }, stopNode},
	{"SIGKILL health", func(o *Options) time.Duration { return o.RestartDelay + 3*time.Second }, killHealth},
}

// faultByName finds a fault by its name or a short alias.
func faultByName(name string) *fault {
	alias := map[string]int{"kill-node": 0, "drain-node": 1, "kill-router": 2, "kill-server": 3, "stop-node": 4, "kill-health": 5}
	if i, ok := alias[name]; ok {
		return &faults[i]
	}
	for i := range faults {
		if faults[i].name == name {
			return &faults[i]
		}
	}
	return nil
}

// phases lays the chosen faults out over the load: each gets an equal
// share of what is left after warm-up, the fault-free phase and the bad
// input, at least its hold.
func phases(o *Options, chosen []*fault, tail time.Duration) []time.Duration {
	avail := o.Duration - o.Warmup - o.Calm - tail
	out := make([]time.Duration, len(chosen))
	if len(chosen) == 0 {
		return out
	}
	share := avail / time.Duration(len(chosen))
	for i, f := range chosen {
		out[i] = max(share, f.hold(o))
	}
	return out
}

// victim picks the running node with the most streams in flight, one not
// hit before when such a node has streams too.
func (h *harness) victim() *node {
	streams := h.l.inFlightStreams()
	var best, fresh *node
	for _, n := range h.m.nodes {
		if !n.proc.running() {
			continue
		}
		if best == nil || streams[n.id] > streams[best.id] {
			best = n
		}
		if !slices.Contains(h.victims, n.id) && (fresh == nil || streams[n.id] > streams[fresh.id]) {
			fresh = n
		}
	}
	if fresh != nil && (streams[fresh.id] > 0 || streams[best.id] == 0) {
		best = fresh
	}
	if best != nil {
		h.victims = append(h.victims, best.id)
	}
	return best
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// nodeSeen reports whether a node is in the router's candidates (so in
// fed_catalog), whether it is eligible and, when not, why.
func (h *harness) nodeSeen(id string) (inCatalog, eligible bool, why string) {
	msg := nats.NewMsg(h.m.space.RouterCandidates())
	msg.Data = []byte(capability)
	r, err := h.nc.RequestMsg(msg, time.Second)
	if err != nil {
		return false, false, ""
	}
	var resp api.CandidatesResponse
	if json.Unmarshal(r.Data, &resp) != nil {
		return false, false, ""
	}
	for _, c := range resp.Candidates {
		if c.NodeID == id {
			return true, c.Eligible, cmp.Or(c.Reason, c.RejectedBy)
		}
	}
	return false, false, ""
}

// registeredAt is when the catalog registered node id (zero when it has
// no record), from fed.catalog.list.
func (h *harness) registeredAt(id string) time.Time {
	r, err := h.nc.Request(h.m.space.CatalogList(), nil, time.Second)
	if err != nil {
		return time.Time{}
	}
	var resp api.ListResponse
	if json.Unmarshal(r.Data, &resp) != nil {
		return time.Time{}
	}
	for _, n := range resp.Nodes {
		if n.NodeID == id {
			return n.RegisteredAt
		}
	}
	return time.Time{}
}

// watchBack notes when node id is back: eligible at a router and, with
// fresh, registered again after since. It polls until end.
func (h *harness) watchBack(ctx context.Context, f *faultRun, id string, since, end time.Time, fresh bool) {
	var inCat bool
	var whys []string // the router's reasons in the order seen, so a slow return names its cause
	why := func(label string) string {
		if len(whys) == 0 {
			return ""
		}
		return " (" + label + ": " + strings.Join(whys, "; ") + ")"
	}
	for time.Now().Before(end) && ctx.Err() == nil {
		c, e, w := h.nodeSeen(id)
		inCat = inCat || c
		if w != "" && !slices.Contains(whys, w) {
			whys = append(whys, w)
		}
		if e && (!fresh || h.registeredAt(id).After(since)) {
			f.note("%s back (eligible) %s after%s", id, fmtDur(time.Since(since)), why("not eligible before"))
			return
		}
		sleepUntil(ctx, time.Now().Add(250*time.Millisecond))
	}
	if inCat {
		f.note("%s in fed_catalog but not back by the phase end%s", id, why("not eligible"))
	} else {
		f.note("%s not back in fed_catalog by the phase end", id)
	}
}

// restart starts p again after delay and keeps it up until end: when it
// exits on its own it is noted and started again after a second.
func (h *harness) restart(ctx context.Context, f *faultRun, p *proc, delay time.Duration, end time.Time) {
	sleepUntil(ctx, time.Now().Add(delay))
	for ctx.Err() == nil {
		if err := p.start(); err != nil {
			f.note("restart of %s failed: %v", p.name, err)
			return
		}
		t := time.Now()
		h.logf("  %s restarted", p.name)
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(time.Until(end)-time.Second, time.Second)):
			return
		case <-p.exited():
			f.note("restarted %s exited with code %d%s", p.name, p.exitCode(), p.why())
			h.logf("  %s exited with code %d after %s; starting it again", p.name, p.exitCode(), fmtDur(time.Since(t)))
			if time.Until(end) < 2*time.Second {
				// The next phase must start at full strength: one more try.
				sleepUntil(ctx, time.Now().Add(time.Second))
				if err := p.start(); err != nil {
					f.note("restart of %s failed: %v", p.name, err)
				}
				return
			}
			sleepUntil(ctx, time.Now().Add(time.Second))
		}
	}
}

func killNode(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	n := h.victim()
	f.Target = fmt.Sprintf("%s (%d streams in flight)", n.id, h.l.inFlightStreams()[n.id])
	if err := n.proc.signal(syscall.SIGKILL); err != nil {
		f.note("%v", err)
		return
	}
	<-n.proc.exited()
	done := make(chan struct{})
	go func() { defer close(done); h.restart(ctx, f, n.proc, h.o.RestartDelay, end) }()
	h.watchBack(ctx, f, n.id, f.At, end, true)
	<-done
}

func drainNode(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	n := h.victim()
	f.Target = fmt.Sprintf("%s (%d streams in flight)", n.id, h.l.inFlightStreams()[n.id])
	if err := n.proc.signal(syscall.SIGTERM); err != nil {
		f.note("%v", err)
		return
	}
	select {
	case <-n.proc.exited():
		f.note("drained and exited (code %d) in %s", n.proc.exitCode(), fmtDur(time.Since(f.At)))
	case <-time.After(time.Until(end)):
		f.note("still draining at the phase end: killed")
		n.proc.kill()
	}
	done := make(chan struct{})
	go func() { defer close(done); h.restart(ctx, f, n.proc, time.Second, end) }()
	h.watchBack(ctx, f, n.id, f.At, end, true)
	<-done
}

func killRouter(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	p := h.m.routers[0]
	f.Target = p.name
	if err := p.signal(syscall.SIGKILL); err != nil {
		f.note("%v", err)
		return
	}
	<-p.exited()
	h.restart(ctx, f, p, h.o.RestartDelay, end)
}

func killMetaLeader(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	i, err := h.m.metaLeader()
	if err != nil {
		f.note("%v; killing n1", err)
		i = 0
	}
	s := h.m.servers[i]
	f.Target = "nats-server " + s.name + " (meta leader)"
	if err := s.proc.signal(syscall.SIGKILL); err != nil {
		f.note("%v", err)
		return
	}
	<-s.proc.exited()
	sleepUntil(ctx, time.Now().Add(h.o.ServerDown))
	if err := s.proc.start(); err != nil {
		f.note("restart of %s failed: %v", s.name, err)
		return
	}
	h.logf("  nats-server %s restarted", s.name)
	t := time.Now()
	if err := waitUntil(ctx, time.Until(end), func() bool { return healthz(s) }); err != nil {
		f.note("%s not healthy again by the phase end", s.name)
		return
	}
	if j, err := h.m.metaLeader(); err == nil {
		f.note("%s back and healthy %s after its restart; meta leader now %s", s.name, fmtDur(time.Since(t)), h.m.servers[j].name)
	}
}

func stopNode(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	n := h.victim()
	f.Target = fmt.Sprintf("%s (%d streams in flight), %s", n.id, h.l.inFlightStreams()[n.id], fmtDur(h.o.StopFor))
	if err := n.proc.signal(syscall.SIGSTOP); err != nil {
		f.note("%v", err)
		return
	}
	sleepUntil(ctx, time.Now().Add(h.o.StopFor))
	if err := n.proc.signal(syscall.SIGCONT); err != nil {
		f.note("%v", err)
		return
	}
	h.logf("  %s continued", n.id)
	h.watchBack(ctx, f, n.id, time.Now(), end, false)
	if !strings.Contains(strings.Join(f.Notes, " "), "back (eligible)") {
		// The mesh did not take it back: restart it so the run goes on at
		// full strength, as an operator would.
		f.note("restarted by the harness")
		n.proc.kill()
		_ = n.proc.start()
	}
}

func killHealth(ctx context.Context, h *harness, f *faultRun, end time.Time) {
	p := h.m.health[0]
	f.Target = p.name
	if err := p.signal(syscall.SIGKILL); err != nil {
		f.note("%v", err)
		return
	}
	<-p.exited()
	done := make(chan struct{})
	go func() { defer close(done); h.restart(ctx, f, p, h.o.RestartDelay, end) }()
	// fed.stats must answer throughout, and say the same whoever answers.
	sleepUntil(ctx, time.Now().Add(h.o.RestartDelay+1500*time.Millisecond))
	totals := h.statsTotals(6)
	f.note("fed.stats total_requests over 6 answers: %s", totals)
	<-done
}

// statsTotals asks fed.stats n times and lists the total_requests answers.
func (h *harness) statsTotals(n int) string {
	var parts []string
	for range n {
		r, err := h.nc.Request(h.m.space.Stats(), nil, time.Second)
		if err != nil {
			parts = append(parts, "no answer")
			continue
		}
		var st record.Stats
		if err := json.Unmarshal(r.Data, &st); err != nil {
			parts = append(parts, "bad JSON")
			continue
		}
		parts = append(parts, fmt.Sprint(st.TotalRequests))
	}
	return strings.Join(parts, ", ")
}
