package bench

import (
	"context"
	"fmt"
	"maps"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const (
	rawEchoSubject   = "bench.raw.echo"
	rawStreamSubject = "bench.raw.stream"
	// rawLongStreamSubject streams longStreamTok tokens.
	rawLongStreamSubject = "bench.raw.stream.long"
)

var benchBody = []byte("ping")

// serveRaw starts the raw NATS responders: an echo that answers with one
// message shaped like a node's final answer (or, on a floor rig, the same
// answer by the mesh's messages: serveFloor), and a streamer that sends the
// same chunks a node would.
func (r *rig) serveRaw() error {
	if r.floor {
		if err := r.serveFloor(); err != nil {
			return err
		}
	} else if _, err := r.raw.Subscribe(rawEchoSubject, func(m *nats.Msg) {
		rep := wire.Reply{Inbox: m.Reply, RequestID: "raw", Node: "raw"}
		_ = r.raw.PublishMsg(rep.Done(m.Data, wire.DoneInfo{Tokens: 1}))
	}); err != nil {
		return err
	}
	chunk := make([]byte, tokenBytes)
	for i := range chunk {
		chunk[i] = 'a' + byte(i%26)
	}
	streamer := func(tokens int) nats.MsgHandler {
		return func(m *nats.Msg) {
			// A real streamer works off the callback, as the node agent does.
			go func(reply string) {
				rep := wire.Reply{Inbox: reply, RequestID: "raw", Node: "raw"}
				var m *nats.Msg
				for i := 0; i < tokens; i++ {
					m = rep.NextChunk(m, chunk) // as the node agent does
					_ = r.raw.PublishMsg(m)
					if i == 0 {
						_ = r.raw.Flush()
					}
				}
				_ = r.raw.PublishMsg(rep.Done(nil, wire.DoneInfo{Tokens: tokens}))
			}(m.Reply)
		}
	}
	for subject, tokens := range map[string]int{rawStreamSubject: streamTok, rawLongStreamSubject: longStreamTok} {
		if _, err := r.raw.Subscribe(subject, streamer(tokens)); err != nil {
			return err
		}
	}
	return r.raw.Flush()
}

// serveFloor answers the echo subject with the four messages a routed whole
// answer costs (DESIGN §4), carrying the headers the wire contract puts on
// them, and no fedmesh code: the request (the SDK's headers, floorRequest)
// reaches a "router", which sends the node a dispatch with the mesh's
// dispatch headers and a reply subject of its own per request; the "node"
// publishes the final to the client's inbox (Fed-Reply-To) and a done ack
// with the node's ack headers to that subject, which the router's wildcard
// subscription reads. Each party is on an in-process connection of its
// own, as the mesh's services are. Raw NATS then measures the protocol's
// floor: what its messages, hops and headers cost without the work fedmesh
// does around them (README → Performance).
func (r *rig) serveFloor() error {
	rc, err := natsembed.ConnectInProcess(r.srv, "bench-floor-router")
	if err != nil {
		return err
	}
	r.floorConns = append(r.floorConns, rc)
	node, err := natsembed.ConnectInProcess(r.srv, "bench-floor-node")
	if err != nil {
		return err
	}
	r.floorConns = append(r.floorConns, node)
	var tok atomic.Uint64
	if _, err := rc.Subscribe(floorAckPrefix+"*", func(m *nats.Msg) {
		if m.Header.Get(wire.HdrStatus) == wire.StatusDone {
			r.floorAcks.Add(1)
		}
	}); err != nil {
		return err
	}
	if _, err := rc.QueueSubscribe(rawEchoSubject, "bench-floor", func(m *nats.Msg) {
		now := time.Now()
		h := make(nats.Header, len(m.Header)+len(floorDispatch)+3)
		maps.Copy(h, m.Header)
		maps.Copy(h, floorDispatch)
		h[wire.HdrReplyTo] = []string{m.Reply}
		h[wire.HdrAckDeadline] = []string{strconv.FormatInt(now.Add(time.Second).UnixMilli(), 10)}
		h[wire.HdrDeadline] = []string{strconv.FormatInt(now.Add(30*time.Second).UnixMilli(), 10)}
		_ = rc.PublishMsg(&nats.Msg{Subject: floorNodeSubject, Reply: floorAckPrefix + strconv.FormatUint(tok.Add(1), 36), Header: h, Data: m.Data})
	}); err != nil {
		return err
	}
	if _, err := node.Subscribe(floorNodeSubject, func(m *nats.Msg) {
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: "bench-node"}
		_ = node.PublishMsg(rep.Done(m.Data, wire.DoneInfo{Tokens: 1}))
		ack := make(nats.Header, len(floorAck)+1)
		maps.Copy(ack, floorAck)
		ack[wire.HdrStatus] = []string{wire.StatusDone}
		_ = node.PublishMsg(&nats.Msg{Subject: m.Reply, Header: ack})
	}); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil {
		return err
	}
	return node.Flush()
}

const (
	floorNodeSubject = "bench.floor.node"
	floorAckPrefix   = "bench.floor.ack."
)

// The floor's headers, as the mesh's messages carry them (names and value
// shapes from a routed request of `fedmesh dev`): the SDK's request
// headers, the dispatch's beyond those (its deadlines and reply inbox are
// set per request) and a done ack's beyond Fed-Status.
var (
	floorRequest = nats.Header{
		blobs.HdrAccept: {"true"}, wire.HdrCancelKey: {"TErMVs8SQJUe84uud4Ve9A"},
		wire.HdrRequestID: {"kkLQxZWVQnCT3v0w2jb2Zz"}, wire.HdrTimeoutMs: {"29999"},
	}
	floorDispatch = nats.Header{
		wire.HdrCapability: {wire.CapGenerate}, wire.HdrRouteScore: {"1.017"}, wire.HdrAttempt: {"1"},
		wire.HdrAckDone: {"true"}, wire.HdrModel: {modelEcho},
	}
	floorAck = nats.Header{
		wire.HdrInFlight: {"1"}, wire.HdrMaxConcurrency: {"4096"}, record.HdrServerLoad: {"r=0;w=0;kv=0.000;ph=0.000"},
	}
)

type sides struct{ raw, mesh dist }

// latencyBlockLen is how many sequential requests a side sends before the
// other side's turn.
const latencyBlockLen = 100

// latency: one client per side, sequential requests, the sides (raw and
// routed, or two meshes) alternating in blocks so both see the same machine
// noise; the first side's are sides.raw.
func latency(ctx context.Context, ss [2]side, n int) (sides, error) {
	// Warm both paths (connections, caches, the node's health record).
	for _, s := range ss {
		if _, err := s.run(ctx, sideOp{Op: opLatency, N: 200}); err != nil {
			return sides{}, fmt.Errorf("warm-up: %w", err)
		}
	}
	var lat [2][]time.Duration
	err := alternate((n+latencyBlockLen-1)/latencyBlockLen, func(side int) error {
		res, err := ss[side].run(ctx, sideOp{Op: opLatency, N: min(latencyBlockLen, n-len(lat[side]))})
		lat[side] = append(lat[side], res.Latencies...)
		return err
	})
	if err != nil {
		return sides{}, err
	}
	return sides{raw: summarise(lat[sideRaw]), mesh: summarise(lat[sideRouted])}, nil
}

// request is one request of side on this session: raw NATS to the echo
// responder, or through the mesh with the SDK.
func (s *session) request(ctx context.Context, side int) func() error {
	if side == sideRaw {
		if s.floor { // the SDK's headers, as the mesh's request carries them
			return func() error {
				_, err := s.nc.RequestMsg(&nats.Msg{Subject: rawEchoSubject, Header: floorRequest, Data: benchBody}, 10*time.Second)
				return err
			}
		}
		return func() error {
			_, err := s.nc.Request(rawEchoSubject, benchBody, 10*time.Second)
			return err
		}
	}
	req := client.Request{Capability: wire.CapGenerate, Model: modelEcho, Body: benchBody}
	return func() error {
		_, err := s.c.Infer(ctx, req)
		return err
	}
}

// latencyBlock sends n requests of one, one after the other.
func latencyBlock(n int, one func() error) (sideResult, error) {
	res := sideResult{Latencies: make([]time.Duration, 0, n)}
	cpu0 := processCPU()
	for range n {
		t0 := time.Now()
		if err := one(); err != nil {
			return sideResult{}, fmt.Errorf("request: %w", err)
		}
		res.Latencies = append(res.Latencies, time.Since(t0))
	}
	res.CPU = processCPU() - cpu0
	return res, nil
}

// rates are requests per second, and the CPU time the process (server, mesh,
// clients) spent per request: the rate follows the CPU share the machine
// gives the run, the CPU per request much less so.
type rates struct {
	raw, mesh             float64
	rawCPU, meshCPU       time.Duration
	rawAllocs, meshAllocs heapAllocs // per request
}

// heapAllocs counts heap allocations: objects and bytes. Of the whole
// process, like the CPU time, since the garbage collector's share of that
// time follows them.
type heapAllocs struct {
	Objects float64 `json:"objects"`
	Bytes   float64 `json:"bytes"`
}

var allocSamples = []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}

// processAllocs is what this process has allocated on the heap so far.
func processAllocs() heapAllocs {
	s := slices.Clone(allocSamples)
	metrics.Read(s)
	var a heapAllocs
	if s[0].Value.Kind() == metrics.KindUint64 && s[1].Value.Kind() == metrics.KindUint64 {
		a.Objects, a.Bytes = float64(s[0].Value.Uint64()), float64(s[1].Value.Uint64())
	}
	return a
}

func (a heapAllocs) minus(b heapAllocs) heapAllocs {
	return heapAllocs{Objects: a.Objects - b.Objects, Bytes: a.Bytes - b.Bytes}
}

func (a heapAllocs) plus(b heapAllocs) heapAllocs {
	return heapAllocs{Objects: a.Objects + b.Objects, Bytes: a.Bytes + b.Bytes}
}

// per is a over n requests (n ≥ 1).
func (a heapAllocs) per(n int64) heapAllocs {
	d := float64(max(1, n))
	return heapAllocs{Objects: a.Objects / d, Bytes: a.Bytes / d}
}

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// throughputBlocks is how many blocks each side's window is cut into.
const throughputBlocks = 6

// throughput: clients concurrent connections per side, each sending
// requests back to back, raw and routed alternating in throughputBlocks
// blocks of window/throughputBlocks.
func throughput(ctx context.Context, ss [2]side, clients int, window time.Duration) (rates, error) {
	var done [2]int64
	var wall, cpu [2]time.Duration
	var allocs [2]heapAllocs
	err := alternate(throughputBlocks, func(side int) error {
		res, err := ss[side].run(ctx, sideOp{Op: opThroughput, N: clients, Window: window / throughputBlocks})
		done[side], wall[side], cpu[side] = done[side]+res.Done, wall[side]+res.Wall, cpu[side]+res.CPU
		allocs[side] = allocs[side].plus(res.Allocs)
		return err
	})
	if err != nil {
		return rates{}, err
	}
	perReq := func(side int) time.Duration { return cpu[side] / time.Duration(max(1, done[side])) }
	return rates{
		raw: float64(done[sideRaw]) / wall[sideRaw].Seconds(), mesh: float64(done[sideRouted]) / wall[sideRouted].Seconds(),
		rawCPU: perReq(sideRaw), meshCPU: perReq(sideRouted),
		rawAllocs: allocs[sideRaw].per(done[sideRaw]), meshAllocs: allocs[sideRouted].per(done[sideRouted]),
	}, nil
}

// throughputBlock runs every one of ones back to back, concurrently, for d.
func throughputBlock(ctx context.Context, d time.Duration, ones []func() error) (sideResult, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	t0, cpu0, allocs0 := time.Now(), processCPU(), processAllocs()
	stop := t0.Add(d)
	var wg sync.WaitGroup
	for _, one := range ones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				if err := one(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	res := sideResult{Done: done.Load(), Wall: time.Since(t0), CPU: processCPU() - cpu0, Allocs: processAllocs().minus(allocs0)}
	if firstErr != nil {
		return sideResult{}, fmt.Errorf("throughput: %w", firstErr)
	}
	return res, nil
}
