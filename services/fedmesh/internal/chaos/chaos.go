package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrTargetsMissed is returned with Options.Strict when the run missed the
// issue's targets; the tables are written first.
var ErrTargetsMissed = errors.New("chaos targets missed")

// inputTail is the load time kept after the last fault for the bad input
// and the probe.
const inputTail = 8 * time.Second

// Run does one chaos run and writes its tables to o.Out (and o.OutFile).
// It returns an error for a harness failure, or ErrTargetsMissed with
// Strict. Every child process is gone when it returns.
func Run(ctx context.Context, o Options) (err error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	chosen := make([]*fault, 0, len(faults))
	for i := range faults {
		if len(o.Faults) == 0 || slices.ContainsFunc(o.Faults, func(n string) bool { return faultByName(n) == &faults[i] }) {
			chosen = append(chosen, &faults[i])
		}
	}
	dir, err := os.MkdirTemp("", "fedmesh-chaos-*")
	if err != nil {
		return err
	}
	o.workDir = dir
	start := time.Now()
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(o.Log, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	m, err := startMesh(ctx, &o, rng, logf)
	defer func() {
		m.procs.closeAll(3 * time.Second)
		if o.Keep || err != nil && !errors.Is(err, ErrTargetsMissed) {
			logf("work dir kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(m.urls(0), nats.Name("chaos-harness"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("harness connection: %w", err)
	}
	defer nc.Close()
	var st strength
	if err := waitUntil(ctx, 30*time.Second, func() bool { st = m.strength(nc); return m.full(st) }); err != nil {
		return fmt.Errorf("the mesh never reached full strength (%s): %w", st, err)
	}
	logf("mesh up: %s", st)
	var nodeDesc []string
	for _, n := range m.nodes {
		nodeDesc = append(nodeDesc, fmt.Sprintf("%s %d–%d tokens × %v", n.id, o.MinTokens, o.MaxTokens, n.delay))
	}

	t0 := time.Now()
	h := &harness{o: &o, m: m, nc: nc, t0: t0, logf: logf}
	h.l = newLoad(m, &o, t0)
	if err := h.l.connect(); err != nil {
		return err
	}
	defer h.l.close()
	h.l.run(ctx)
	logf("load: %d closed-loop clients (half streamed), %v deadline; no fault for %v", o.Clients, o.ClientTimeout, o.Warmup+o.Calm)
	sleepUntil(ctx, t0.Add(o.Warmup+o.Calm))

	tail := inputTail
	if o.SkipInput {
		tail = 2 * time.Second
	}
	lens := phases(&o, chosen, tail)
	var runs []*faultRun
	for i, f := range chosen {
		if ctx.Err() != nil {
			break
		}
		fr := &faultRun{Name: f.name, At: time.Now()}
		runs = append(runs, fr)
		end := fr.At.Add(lens[i])
		logf("fault %d/%d: %s", i+1, len(chosen), f.name)
		f.run(ctx, h, fr, end)
		logf("  %s: %s", fr.Target, strings.Join(fr.Notes, "; "))
		sleepUntil(ctx, end)
	}

	r := &report{
		Title: fmt.Sprintf("fedmesh chaos (%s, seed %d)", map[bool]string{true: "short", false: "full"}[o.Short], o.Seed),
		Setup: fmt.Sprintf("3 nats-servers (R3 buckets), 2 catalogs, 2 health, 2 routers, %d synthetic nodes (%s; max_concurrency %d), %d closed-loop clients (half streamed, %v deadline)%s; every answer checked token by token on the wire.",
			o.Nodes, strings.Join(nodeDesc, ", "), o.MaxConcurrency, o.Clients, o.ClientTimeout,
			map[bool]string{true: fmt.Sprintf("; catalog node_ttl %v", o.NodeTTL), false: ""}[o.NodeTTL > 0]+
				map[bool]string{true: fmt.Sprintf("; health reset_timeout %v", o.ResetTimeout), false: ""}[o.ResetTimeout > 0]),
		T0: t0,
	}
	if !o.SkipInput && ctx.Err() == nil {
		fr := &faultRun{Name: "malformed input on NATS", At: time.Now(), Target: "every subject the mesh listens on"}
		runs = append(runs, fr)
		logf("malformed input")
		r.Inputs = h.sendInputs(h.inputs(m.nodes[0].id))
		bad := 0
		for _, in := range r.Inputs {
			if !in.OK {
				bad++
			}
		}
		fr.note("%d of %d not as documented", bad, len(r.Inputs))
		logf("  %d inputs, %d not as documented", len(r.Inputs), bad)
		r.AfterOK, r.After = h.probeAfter(ctx)
		logf("  after: %s", strings.Join(r.After, "; "))
	}
	sleepUntil(ctx, t0.Add(o.Duration))
	loadEnd := time.Now()
	h.l.stop()
	sleepUntil(ctx, time.Now().Add(o.Linger))
	if ctx.Err() != nil {
		return fmt.Errorf("chaos run interrupted: %w", ctx.Err())
	}
	reqs := h.l.judgeAll(func(body []byte) expectation { return expectFor(m.nodes, body, &o) })
	outs := make([]outcome, 0, len(reqs))
	for _, q := range reqs {
		outs = append(outs, outcome{start: q.start, end: q.end, verdict: q.verdict})
	}
	r.Total = summarize(outs)
	r.Calm = calmPhase(t0, runs, outs, loadEnd)
	r.Slots, r.Clients = o.Nodes*o.MaxConcurrency, o.Clients
	r.Before = analyze(runs, outs, loadEnd)
	r.Faults = runs
	r.Examples = examples(reqs, t0, 12)
	r.Notes = append(r.Notes, fmt.Sprintf("Run: %s total, load %s; `strict success` = exactly one final, `done`, every token and the count right, nothing after it, over requests whose client connection was not cut; read by the client rules: a node that took over from a lost one (`Fed-Takeover`) replaces it, its resent chunks (`Fed-Seq` below the next expected) must repeat what the client has and are skipped, a router's `Fed-Lost-Node` 503 is the final, and the replaced node's later messages are dropped, not second answers. Silence = no final within the deadline + 1 s. `at` is seconds since the load started. A failed request belongs to the first fault that happened while it was in flight, else to the last one before it was sent. Time to normal = from the fault to the later of: the last affected request ending (its final or its deadline), and the start of the first 3 s in which every request sent was a strict success.",
		fmtDur(time.Since(start)), fmtDur(loadEnd.Sub(t0))))

	var buf bytes.Buffer
	r.write(&buf)
	if _, err := o.Out.Write(buf.Bytes()); err != nil {
		return err
	}
	if o.OutFile != "" {
		if err := os.WriteFile(o.OutFile, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.OutFile, err)
		}
	}
	if met, miss := r.targetsMet(); !met && o.Strict {
		return fmt.Errorf("%w: %s", ErrTargetsMissed, strings.Join(miss, "; "))
	}
	return nil
}

// afterWait bounds probeAfter's wait for full strength: on a loaded 2-core
// CI machine the node the SIGSTOP phase restarted may still be proving
// itself to health.
const afterWait = 15 * time.Second

// probeAfter checks the mesh serves normally right after the bad input:
// full strength, every node eligible, and a round of requests all strict.
func (h *harness) probeAfter(ctx context.Context) (bool, []string) {
	var notes []string
	ok := true
	var st strength
	if err := waitUntil(ctx, afterWait, func() bool { st = h.m.strength(h.nc); return h.m.full(st) }); err != nil {
		ok = false
	}
	notes = append(notes, st.String())
	n := 12
	good := 0
	why := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v := h.probeRequest(i%2 == 0, i)
			mu.Lock()
			defer mu.Unlock()
			if v.Class == ClassOK {
				good++
			} else {
				why[v.Detail]++
			}
		})
	}
	wg.Wait()
	notes = append(notes, fmt.Sprintf("%d of %d probe requests strict", good, n))
	if good != n {
		ok = false
		for _, d := range slices.Sorted(maps.Keys(why)) {
			notes = append(notes, fmt.Sprintf("%d× %s", why[d], d))
		}
	}
	notes = append(notes, "fed.stats total_requests: "+h.statsTotals(3))
	if strings.Contains(notes[len(notes)-1], "no answer") || strings.Contains(notes[len(notes)-1], "bad JSON") {
		ok = false
	}
	return ok, notes
}

// probeRequest is one checked request outside the load.
func (h *harness) probeRequest(stream bool, i int) Verdict {
	inbox := h.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := h.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return Verdict{Class: ClassSilence, Detail: err.Error()}
	}
	defer sub.Unsubscribe()
	body := fmt.Appendf(nil, "chaos probe %d %d", i, time.Now().UnixNano())
	m := nats.NewMsg(h.m.space.Infer(capability))
	m.Reply, m.Data = inbox, body
	m.Header.Set("Fed-Timeout-Ms", "5000")
	if stream {
		m.Header.Set("Fed-Stream", "true")
	}
	if err := h.nc.PublishMsg(m); err != nil {
		return Verdict{Class: ClassSilence, Detail: err.Error()}
	}
	var msgs []message
	t := time.After(6 * time.Second)
	var linger <-chan time.Time
	for done := false; !done; {
		select {
		case raw := <-ch:
			msg := decodeMessage(raw, time.Now())
			msgs = append(msgs, msg)
			if msg.final() && linger == nil {
				linger = time.After(200 * time.Millisecond)
			}
		case <-t:
			done = true
		case <-linger:
			done = true
		}
	}
	return judge(msgs, stream, false, expectFor(h.m.nodes, body, h.o))
}

// examples lists up to n failed requests, at most 3 of a class.
func examples(reqs []*request, t0 time.Time, n int) []string {
	perClass := map[Class]int{}
	var out []string
	sorted := append([]*request(nil), reqs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].start.Before(sorted[j].start) })
	for _, r := range sorted {
		c := r.verdict.Class
		if c == ClassOK || perClass[c] >= 3 || len(out) >= n {
			continue
		}
		perClass[c]++
		kind := "whole"
		if r.stream {
			kind = "stream"
		}
		out = append(out, fmt.Sprintf("`%s` (%s, sent at %s): %s: %s", r.id, kind, fmtDur(r.start.Sub(t0)), c, r.verdict.Detail))
	}
	return out
}
