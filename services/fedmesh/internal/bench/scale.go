package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// proc is a service running as its own program, so its memory and CPU can
// be read from /proc without the benchmark's own.
type proc struct {
	name string
	cmd  *exec.Cmd
}

func startProc(ctx context.Context, binDir, name, url string) (*proc, error) {
	path := filepath.Join(binDir, name)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("scale run needs the %s binary (make build): %w", name, err)
	}
	cmd := exec.CommandContext(ctx, path, "--nats-url", url, "--log-format", "json", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &proc{name: name, cmd: cmd}, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// rssMB reads VmRSS of the process.
func (p *proc) rssMB() float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// cpu returns the process's user+system CPU time.
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// scale registers ScaleNodes lightweight simulated nodes that heartbeat every
// second and reports how long catalog, health and router take to know them
// all, and what router and health cost while they heartbeat.
func scale(ctx context.Context, w io.Writer, o Options) error {
	n := o.ScaleNodes
	dir, err := os.MkdirTemp("", "fedmesh-scale-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: dir, Name: "fedmesh-scale"})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	url := srv.ClientURL()
	procs := map[string]*proc{}
	for _, name := range []string{"catalog", "health", "router"} {
		p, err := startProc(ctx, o.BinDir, name, url)
		if err != nil {
			return err
		}
		defer p.stop()
		procs[name] = p
	}
	nc, err := nats.Connect(url, nats.Name("bench-scale"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitFor(30*time.Second, func() bool { return routerNodes(nc) >= 0 }); err != nil {
		return fmt.Errorf("router never answered: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	rss0 := map[string]float64{"router": procs["router"].rssMB(), "health": procs["health"].rssMB()}

	// The simulated nodes answer health's active probes, as node agents do
	// (health probes idle nodes it knows nothing about yet).
	probes, err := nc.Subscribe(subject.Default.NodeProbe("*"), func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	if err != nil {
		return err
	}
	defer probes.Unsubscribe()

	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	t0 := time.Now()
	var registered atomic.Int64
	go heartbeats(hbCtx, nc, n, &registered)
	if err := registerAll(ctx, nc, n, &registered); err != nil {
		return err
	}
	tReg := time.Since(t0)
	var tCat, tHealth, tRouter time.Duration
	err = waitFor(60*time.Second, func() bool {
		if tCat == 0 && streamMsgs(ctx, js, "KV_fed_catalog") >= uint64(n) {
			tCat = time.Since(t0)
		}
		if tHealth == 0 && streamMsgs(ctx, js, "KV_fed_health") >= uint64(n) {
			tHealth = time.Since(t0)
		}
		if tRouter == 0 && routerNodes(nc) >= n {
			tRouter = time.Since(t0)
		}
		return tCat > 0 && tHealth > 0 && tRouter > 0
	})
	if err != nil {
		return fmt.Errorf("scale: %d nodes did not converge in 60 s (catalog %v, health %v, router %v)", n, tCat, tHealth, tRouter)
	}
	// Steady state: nodes only heartbeat.
	cpu0 := map[string]time.Duration{"router": procs["router"].cpu(), "health": procs["health"].cpu()}
	const win = 10 * time.Second
	time.Sleep(win)
	fmt.Fprintf(w, "### Scale: %d simulated nodes, heartbeats every second\n\n", n)
	fmt.Fprintf(w, "| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(w, "| all registrations answered | %.2f s | |\n", tReg.Seconds())
	fmt.Fprintf(w, "| catalog has all nodes (fed_catalog) | %.2f s | |\n", tCat.Seconds())
	fmt.Fprintf(w, "| health has all nodes (fed_health) | %.2f s | |\n", tHealth.Seconds())
	fmt.Fprintf(w, "| router has all nodes | %.2f s | ≤ 5 s |\n", tRouter.Seconds())
	for _, name := range []string{"router", "health"} {
		p := procs[name]
		fmt.Fprintf(w, "| %s memory (RSS; before nodes %.0f MB) | %.0f MB | %s |\n", name, rss0[name], p.rssMB(), map[string]string{"router": "≤ 100 MB"}[name])
		fmt.Fprintf(w, "| %s CPU on heartbeats | %.0f%% of one core | |\n", name, 100*float64(p.cpu()-cpu0[name])/float64(win))
	}
	fmt.Fprintln(w)
	return nil
}

func waitFor(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func streamMsgs(ctx context.Context, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// routerNodes asks the router's micro stats for how many nodes it caches
// (-1 when it does not answer).
func routerNodes(nc *nats.Conn) int {
	resp, err := nc.Request("$SRV.STATS."+subject.ServiceRouter, nil, time.Second)
	if err != nil {
		return -1
	}
	var st struct {
		Endpoints []struct {
			Data json.RawMessage `json:"data"`
		} `json:"endpoints"`
	}
	if json.Unmarshal(resp.Data, &st) != nil {
		return -1
	}
	best := 0
	for _, e := range st.Endpoints {
		var d struct {
			Nodes int `json:"nodes"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Nodes > best {
			best = d.Nodes
		}
	}
	return best
}

func simNode(i int) record.Node {
	id := fmt.Sprintf("sim-%05d", i)
	return record.Node{NodeID: id, Region: fmt.Sprintf("r%d", i%8), InstanceID: id + "-1", GPU: i%2 == 0,
		Cost: float64(i%10) / 10, Clearance: wire.PrivacyInternal, MaxConcurrency: 8,
		Models: []record.Model{{ModelID: fmt.Sprintf("model-%d", i%50), Capabilities: []string{wire.CapGenerate}}}}
}

func registerAll(ctx context.Context, nc *nats.Conn, n int, registered *atomic.Int64) error {
	jobs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				b, _ := json.Marshal(simNode(i))
				resp, err := nc.RequestWithContext(ctx, subject.Default.CatalogRegister(), b)
				if err == nil {
					if werr := wire.ErrorFromHeader(resp.Header); werr != nil {
						err = werr
					}
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("register sim node %d: %w", i, err):
					default:
					}
					continue
				}
				registered.Add(1)
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return nil
}

// heartbeats publishes one heartbeat per registered node per second, spread
// evenly over the second.
func heartbeats(ctx context.Context, nc *nats.Conn, n int, registered *atomic.Int64) {
	const slices = 100
	tick := time.NewTicker(time.Second / slices)
	defer tick.Stop()
	for s := 0; ; s = (s + 1) % slices {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		upto := int(registered.Load())
		for i := s; i < n && i < upto; i += slices {
			id := fmt.Sprintf("sim-%05d", i)
			hb := record.Heartbeat{NodeID: id, InstanceID: id + "-1", Time: time.Now(), MaxConcurrency: 8}
			_ = wire.PublishJSON(nc, subject.Default.Heartbeat(id), hb) // the next second's heartbeat makes up for a lost one
		}
	}
}
