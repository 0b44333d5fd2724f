package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Defaults of a benchmark run: what Options' zero values mean and what the
// flags of `fedmesh bench` start at.
const (
	DefaultSamples = 2000
	DefaultWindow  = 3 * time.Second
	DefaultClients = 64
	DefaultStreams = 256
	// DefaultScaleNodes is the flag's only: ScaleNodes 0 skips the scale run.
	DefaultScaleNodes = 10000
)

// Options of a benchmark run.
type Options struct {
	Out        io.Writer
	Samples    int           // sequential requests per side for latency (default DefaultSamples)
	Window     time.Duration // measuring window per side for throughput (default DefaultWindow)
	Clients    int           // concurrent clients for throughput (default DefaultClients)
	Streams    int           // streams per side and concurrency level (default DefaultStreams)
	ScaleNodes int           // simulated nodes for the scale run (0 skips it)
	BinDir     string        // where the router/health binaries are for the scale run
	Only       string        // run one part: reqreply, stream, blobs, secure, cancel, gateway, decisions or scale ("" = all)
	CPUProfile string        // write a CPU profile of the run here (go tool pprof)
	MemProfile string        // write a heap allocation profile of the run here (go tool pprof -sample_index=alloc_space)
	// SideCommand starts a side process of the request-reply and decode
	// measurements (ServeSide; side.go): the program and its arguments, to
	// which "--side S" is added. Empty: both sides run in this process only.
	SideCommand []string
	// OutcomeWindow is the bench nodes' outcome_window (0: each outcome at
	// once, the node default): what batching outcomes buys.
	OutcomeWindow time.Duration
	// Floor makes the raw side of the request-reply table answer by the
	// mesh's own four messages with no fedmesh code (serveFloor): what the
	// protocol costs, against what the mesh costs.
	Floor bool
}

func (o *Options) runs(part string) bool { return o.Only == "" || o.Only == part }

// Parts are what Options.Only may name, in the order a run measures them.
var Parts = []string{"reqreply", "stream", "blobs", "secure", "cancel", "gateway", "decisions", "scale"}

// check refuses an Only that names no part (it would measure nothing).
func (o *Options) check() error {
	if o.Only == "" || slices.Contains(Parts, o.Only) {
		return nil
	}
	return fmt.Errorf("bench: --only %q is not a part (one of %s)", o.Only, strings.Join(Parts, ", "))
}

func (o *Options) defaults() {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Samples <= 0 {
		o.Samples = DefaultSamples
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Clients <= 0 {
		o.Clients = DefaultClients
	}
	if o.Streams <= 0 {
		o.Streams = DefaultStreams
	}
}

// Bench models: a zero-delay node for request-reply and one that streams
// 256 tokens of 16 B, or 4096 for the decode-rate table (a 256-token
// stream lasts ≈ 0.5 ms: one scheduling hiccup moves its rate by tens of
// percent).
const (
	modelEcho       = "bench-echo"
	modelStream     = "bench-stream"
	streamTok       = 256
	modelLongStream = "bench-stream-long"
	longStreamTok   = 4096
	tokenBytes      = 16
	modelSlow       = "bench-slow"
	slowNode        = "bench-slow-node"
)

// rig is the server, the mesh and the raw responders every measurement shares.
type rig struct {
	srv  *server.Server
	mesh *devmesh.Mesh
	raw  *nats.Conn // raw responders, on an in-process connection like the node's
	dir  string
	// authDir: a secured rig's auth material (newSecureRig); "" when open
	authDir string
	// up is a tiny OpenAI-compatible server, upstream its openai node's
	// backend (the gateway part); nil on a secured rig
	up       *tinyUpstream
	upstream *openai.Backend
	// outcomeWindow is every bench node's OutcomeWindow
	outcomeWindow time.Duration
	// floor: the raw echo answers by the mesh's messages (serveFloor), on
	// floorConns; floorAcks counts the done acks its router read
	floor      bool
	floorConns []*nats.Conn
	floorAcks  atomic.Uint64
	// pool are the client sessions of the localSides (clients)
	pool []*session
}

func newRig(ctx context.Context, window time.Duration, floor bool) (*rig, error) {
	dir, err := os.MkdirTemp("", "fedmesh-bench-*")
	if err != nil {
		return nil, err
	}
	r := &rig{dir: dir, outcomeWindow: window, floor: floor}
	if err := r.start(ctx); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// start brings up the server, the mesh and the raw responders; close undoes
// whatever of it exists.
func (r *rig) start(ctx context.Context) error {
	var err error
	if err := r.startUpstream(); err != nil {
		return err
	}
	if r.srv, err = natsembed.Start(natsembed.Options{Port: -1, StoreDir: r.dir, Name: "fedmesh-bench"}); err != nil {
		return err
	}
	nodes := append(benchNodes(r.outcomeWindow), upstreamNode(r.upstream))
	if r.mesh, err = devmesh.Start(ctx, devmesh.Options{Server: r.srv, Log: zerolog.Nop(), Nodes: nodes, Gateway: benchGateway()}); err != nil {
		return err
	}
	if r.raw, err = natsembed.ConnectInProcess(r.srv, "bench-raw"); err != nil {
		return err
	}
	return r.serveRaw()
}

// benchNodes are a zero-delay node serving the echo and stream models, and
// a node that streams slowly and for long, so a cancel always lands
// mid-stream.
func benchNodes(window time.Duration) []nodeagent.Config {
	n := nodeagent.DefaultConfig()
	n.NodeID, n.Region, n.GPU, n.Cost, n.MaxConcurrency = "bench-node", "local", true, 0.5, 4096
	n.Models = []record.Model{
		{ModelID: modelEcho, Capabilities: []string{wire.CapGenerate}},
		{ModelID: modelStream, Capabilities: []string{wire.CapGenerate}},
		{ModelID: modelLongStream, Capabilities: []string{wire.CapGenerate}},
	}
	n.Backend = synthetic.New(synthetic.Config{Tokens: 1, TokensByModel: map[string]int{modelStream: streamTok, modelLongStream: longStreamTok}, TokenBytes: tokenBytes})
	slow := nodeagent.DefaultConfig()
	slow.NodeID, slow.Region, slow.MaxConcurrency = slowNode, "local", 64
	slow.Models = []record.Model{{ModelID: modelSlow, Capabilities: []string{wire.CapGenerate}}}
	slow.Backend = synthetic.New(synthetic.Config{Tokens: 1 << 20, TokenDelay: 5 * time.Millisecond})
	nodes := []nodeagent.Config{n, slow, blobNodeConfig()}
	for i := range nodes {
		nodes[i].OutcomeWindow = window
	}
	return nodes
}

// clients are the rig's first n client sessions, connected on first use and
// kept until close: the localSides share them.
func (r *rig) clients(n int) ([]*session, error) {
	for len(r.pool) < n {
		s, err := r.session()
		if err != nil {
			return nil, err
		}
		r.pool = append(r.pool, s)
	}
	return r.pool[:n], nil
}

// closeClients closes the sessions of clients.
func (r *rig) closeClients() {
	for _, s := range r.pool {
		s.close()
	}
	r.pool = nil
}

func (r *rig) close() {
	r.closeClients()
	if r.raw != nil {
		r.raw.Close()
	}
	for _, nc := range r.floorConns {
		nc.Close()
	}
	if r.mesh != nil {
		r.mesh.Stop()
	}
	if r.srv != nil {
		r.srv.Shutdown()
		r.srv.WaitForShutdown()
	}
	if r.up != nil {
		r.up.close()
	}
	os.RemoveAll(r.dir)
}

// session is one client's connection over loopback TCP, as a real client
// has, and an SDK client on it.
type session struct {
	nc *nats.Conn
	c  *client.Client
	// floor: raw requests carry the SDK's headers (a floor rig's, serveFloor)
	floor bool
}

func (r *rig) session() (*session, error) {
	nc, err := nats.Connect(r.srv.ClientURL(), nats.Name("bench-client"))
	if err != nil {
		return nil, fmt.Errorf("bench: connect client: %w", err)
	}
	c, err := client.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &session{nc: nc, c: c, floor: r.floor}, nil
}

func (s *session) close() {
	_ = s.c.Close()
	s.nc.Close()
}

// Run measures everything and prints the tables.
func Run(ctx context.Context, o Options) error {
	o.defaults()
	if err := o.check(); err != nil {
		return err
	}
	r, err := newRig(ctx, o.OutcomeWindow, o.Floor)
	if err != nil {
		return fmt.Errorf("bench: start mesh: %w", err)
	}
	defer r.close()
	w := o.Out
	fmt.Fprintf(w, "## fedmesh benchmarks\n\nMachine: %s/%s, %d CPUs, %s. Server: embedded nats-server, clients over loopback TCP, services and nodes on in-process connections.\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())

	stopProfiles, err := (Profiles{CPU: o.CPUProfile, Mem: o.MemProfile}).Start()
	if err != nil {
		return err
	}
	defer stopProfiles()
	if o.runs("reqreply") {
		if err := r.withWays(ctx, o, "reqreply", func(ways []sidesWay) error { return reqReplyTable(ctx, w, o, ways) }); err != nil {
			return err
		}
	}
	if o.runs("stream") {
		if err := r.withWays(ctx, o, "stream", func(ways []sidesWay) error { return r.streamTable(ctx, w, o, ways) }); err != nil {
			return err
		}
	}
	if o.runs("blobs") {
		if err := r.blobTable(ctx, w); err != nil {
			return err
		}
	}
	if o.runs("secure") {
		if err := r.secureTable(ctx, w, o.Samples); err != nil {
			return err
		}
	}
	if o.runs("cancel") {
		if err := r.cancelTable(ctx, w); err != nil {
			return err
		}
	}
	if o.runs("gateway") {
		if err := r.gatewayTable(ctx, w, o); err != nil {
			return err
		}
	}
	if o.runs("decisions") {
		if err := decisions(w); err != nil {
			return err
		}
	}
	if o.ScaleNodes > 0 && o.runs("scale") {
		if err := scale(ctx, w, o); err != nil {
			return err
		}
	}
	return nil
}

// sidesWay is a way to run the two sides: in which processes, and their sides.
type sidesWay struct {
	name  string
	sides [2]side
}

// withWays runs one table's measurements with each side in a side process
// of its own (when o.SideCommand says how) and with both on r. Each table
// gets fresh side processes and r's client sessions are closed after it,
// so what one table leaves behind (64 clients, their heap) does not weigh
// on the next. With profiles asked for, each side process writes its own,
// named after the option's file, the part and the side (cpu.out.reqreply.routed).
func (r *rig) withWays(ctx context.Context, o Options, part string, table func([]sidesWay) error) error {
	defer r.closeClients()
	var ways []sidesWay
	if len(o.SideCommand) > 0 {
		procs, err := startSides(ctx, o.SideCommand, func(side string) []string {
			args := Profiles{CPU: o.CPUProfile, Mem: o.MemProfile}.of(part + "." + side).args()
			if o.Floor {
				args = append(args, "--floor")
			}
			return args
		})
		if err != nil {
			return err
		}
		defer stopSides(procs)
		ways = append(ways, sidesWay{"one per side", procs})
	}
	return table(append(ways, sidesWay{"one, shared by both sides", localSides(r)}))
}

func reqReplyTable(ctx context.Context, w io.Writer, o Options, ways []sidesWay) error {
	type measured struct {
		lat sides
		tp  rates
	}
	ms := make([]measured, len(ways))
	for i, wy := range ways {
		var err error
		if ms[i].lat, err = latency(ctx, wy.sides, o.Samples); err != nil {
			return fmt.Errorf("bench: latency (%s): %w", wy.name, err)
		}
		if ms[i].tp, err = throughput(ctx, wy.sides, o.Clients, o.Window); err != nil {
			return fmt.Errorf("bench: throughput (%s): %w", wy.name, err)
		}
	}
	raw := "raw NATS"
	fmt.Fprintf(w, "### Request-reply: raw NATS vs routed by fedmesh (zero-delay synthetic node)\n\n")
	fmt.Fprintf(w, "One per side: each side in a process of its own (its own server and mesh, started alike); one, shared: both in this process.")
	if o.Floor {
		raw = "raw NATS, the mesh's 4 messages"
		fmt.Fprintf(w, " Floor: raw NATS answers by the mesh's own messages (request, dispatch, final, done ack) through a plain router and node, with no fedmesh code; the targets are against plain raw NATS.")
	}
	fmt.Fprintf(w, "\n\n| measure | processes | %s | fedmesh | ratio (fedmesh/raw) | target |\n|---|---|---|---|---|---|\n", raw)
	for i, wy := range ways {
		lat, tp := ms[i].lat, ms[i].tp
		fmt.Fprintf(w, "| p50 latency, 1 client (%d req) | %s | %.1f µs | %.1f µs | %.2f× | ≤ 2.0× |\n", o.Samples, wy.name, us(lat.raw.p50), us(lat.mesh.p50), ratio(lat.mesh.p50, lat.raw.p50))
		fmt.Fprintf(w, "| p99 latency, 1 client | %s | %.1f µs | %.1f µs | %.2f× | ≤ 2.5× |\n", wy.name, us(lat.raw.p99), us(lat.mesh.p99), ratio(lat.mesh.p99, lat.raw.p99))
		fmt.Fprintf(w, "| throughput, %d clients | %s | %.0f req/s | %.0f req/s | %.2f× | ≥ 0.45× |\n", o.Clients, wy.name, tp.raw, tp.mesh, tp.mesh/tp.raw)
		fmt.Fprintf(w, "| CPU per request, %d clients (the process) | %s | %.1f µs | %.1f µs | %.2f× | — |\n", o.Clients, wy.name, us(tp.rawCPU), us(tp.meshCPU), ratio(tp.meshCPU, tp.rawCPU))
		fmt.Fprintf(w, "| heap allocations per request, %d clients (the process) | %s | %.0f (%.1f KB) | %.0f (%.1f KB) | %.2f× (bytes %.2f×) | — |\n", o.Clients, wy.name,
			tp.rawAllocs.Objects, tp.rawAllocs.Bytes/1024, tp.meshAllocs.Objects, tp.meshAllocs.Bytes/1024,
			tp.meshAllocs.Objects/max(tp.rawAllocs.Objects, 1), tp.meshAllocs.Bytes/max(tp.rawAllocs.Bytes, 1))
	}
	fmt.Fprintln(w)
	return nil
}

func (r *rig) streamTable(ctx context.Context, w io.Writer, o Options, ways []sidesWay) error {
	fmt.Fprintf(w, "### Streaming %d tokens of %d B: raw NATS stream to an inbox vs through the mesh\n\n", streamTok, tokenBytes)
	fmt.Fprintf(w, "TTFT is p50 from the request to the first token; aggregate is all tokens over the wall time, routing included. (Decode rate is the next table's: at zero delay a %d-token stream arrives in a few reads of the socket, and its rate measures that burst.)\n\n", streamTok)
	fmt.Fprintf(w, "| concurrent streams | TTFT raw | TTFT fedmesh | TTFT ratio | aggregate tokens/s raw | fedmesh | ratio |\n|---|---|---|---|---|---|---|\n")
	for _, conc := range []int{1, 32} {
		s, err := r.streaming(ctx, conc, o.Streams)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "| %d | %.1f µs | %.1f µs | %.2f× | %.0f | %.0f | %.2f× |\n", conc, us(s.rawTTFT), us(s.meshTTFT),
			ratio(s.meshTTFT, s.rawTTFT), s.rawTPS, s.meshTPS, s.meshTPS/s.rawTPS)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "### Decode rate over %d-token streams: waves of raw and routed streams alternated\n\n", longStreamTok)
	fmt.Fprintf(w, "Decode rate is each stream's tokens after the first over the time after the first (the usual tokens/s of LLM serving; the routing cost is in TTFT), p50 and p10 over streams. Waves of as many streams as the row's concurrency, raw and routed waves alternating until each side has its streams, so both sides see the same machine and a wave streams one kind only. CPU per token is the whole process's (server, node, client) over its side's waves, which follows the machine's load far less than a rate. One per side: each side streams in a process of its own (its own server and mesh, started alike), so the sides do not share a garbage collector; one, shared: both in this process.\n\n")
	fmt.Fprintf(w, "| processes | concurrent streams | streams per side | decode tokens/s p50 raw | fedmesh | ratio (target ≥ 0.9×) | p10 ratio | CPU per token raw | fedmesh | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, wy := range ways {
		for _, c := range []struct{ conc, perSide int }{{1, max(8, o.Streams/4)}, {32, max(32, o.Streams)}} {
			d, err := decode(ctx, wy.sides, c.conc, c.perSide)
			if err != nil {
				return fmt.Errorf("decode rate (%d concurrent, %s): %w", c.conc, wy.name, err)
			}
			r50, m50 := quantileFloat(d.raw, 0.5), quantileFloat(d.mesh, 0.5)
			r10, m10 := quantileFloat(d.raw, 0.1), quantileFloat(d.mesh, 0.1)
			fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.0f | %.2f× | %.2f× | %.2f µs | %.2f µs | %.2f× |\n", wy.name, c.conc, len(d.mesh), r50, m50, m50/r50, m10/r10,
				us(d.rawCPU), us(d.meshCPU), ratio(d.meshCPU, d.rawCPU))
		}
	}
	fmt.Fprintln(w)
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Profiles are the files a process writes its CPU profile and its heap
// allocation profile to (go tool pprof; "" writes none).
type Profiles struct{ CPU, Mem string }

// Start starts the CPU profile; stop ends it and writes the allocation
// profile (pprof's "allocs": every sampled allocation since the process
// started), reporting a failure to write on stderr.
func (p Profiles) Start() (stop func(), err error) {
	var cpu *os.File
	if p.CPU != "" {
		if cpu, err = os.Create(p.CPU); err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			_ = cpu.Close()
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			_ = cpu.Close()
		}
		if p.Mem == "" {
			return
		}
		f, err := os.Create(p.Mem)
		if err == nil {
			err = pprof.Lookup("allocs").WriteTo(f, 0)
			_ = f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: allocation profile: %v\n", err)
		}
	}, nil
}

// of is p for one side process: each file name with "."+suffix.
func (p Profiles) of(suffix string) Profiles {
	if p.CPU != "" {
		p.CPU += "." + suffix
	}
	if p.Mem != "" {
		p.Mem += "." + suffix
	}
	return p
}

// args are p as bench-side's flags.
func (p Profiles) args() []string {
	var a []string
	if p.CPU != "" {
		a = append(a, "--cpuprofile", p.CPU)
	}
	if p.Mem != "" {
		a = append(a, "--memprofile", p.Mem)
	}
	return a
}
