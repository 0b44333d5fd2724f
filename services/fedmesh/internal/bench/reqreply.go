package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/client"
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
// message shaped like a node's final answer, and a streamer that sends the
// same chunks a node would.
func (r *rig) serveRaw() error {
	if _, err := r.raw.Subscribe(rawEchoSubject, func(m *nats.Msg) {
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

type sides struct{ raw, mesh dist }

// latency: one client, sequential requests, raw and routed interleaved in
// blocks so both see the same machine noise.
func (r *rig) latency(ctx context.Context, n int) (sides, error) {
	sess, err := r.session()
	if err != nil {
		return sides{}, err
	}
	defer sess.close()
	nc, c := sess.nc, sess.c
	req := client.Request{Capability: wire.CapGenerate, Model: modelEcho, Body: benchBody}
	// Warm both paths (connections, caches, the node's health record).
	for i := 0; i < 200; i++ {
		if _, err := nc.Request(rawEchoSubject, benchBody, 5*time.Second); err != nil {
			return sides{}, fmt.Errorf("raw warm-up: %w", err)
		}
		if _, err := c.Infer(ctx, req); err != nil {
			return sides{}, fmt.Errorf("routed warm-up: %w", err)
		}
	}
	raw := make([]time.Duration, 0, n)
	mesh := make([]time.Duration, 0, n)
	const block = 100
	for len(raw) < n {
		for i := 0; i < block && len(raw) < n; i++ {
			t0 := time.Now()
			if _, err := nc.Request(rawEchoSubject, benchBody, 5*time.Second); err != nil {
				return sides{}, fmt.Errorf("raw request: %w", err)
			}
			raw = append(raw, time.Since(t0))
		}
		for i := 0; i < block && len(mesh) < n; i++ {
			t0 := time.Now()
			if _, err := c.Infer(ctx, req); err != nil {
				return sides{}, fmt.Errorf("routed request: %w", err)
			}
			mesh = append(mesh, time.Since(t0))
		}
	}
	return sides{raw: summarise(raw), mesh: summarise(mesh)}, nil
}

// rates are requests per second, and the CPU time the whole process
// (server, mesh, clients) spent per request: the rate follows the CPU share
// the machine gives the run, the CPU per request much less so.
type rates struct {
	raw, mesh       float64
	rawCPU, meshCPU time.Duration
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

// throughput: clients concurrent connections, each sending requests back to
// back for the window, raw and routed alternating in throughputBlocks blocks.
func (r *rig) throughput(ctx context.Context, clients int, window time.Duration) (rates, error) {
	sessions := make([]*session, clients)
	for i := range sessions {
		sess, err := r.session()
		if err != nil {
			return rates{}, err
		}
		defer sess.close()
		sessions[i] = sess
	}
	req := client.Request{Capability: wire.CapGenerate, Model: modelEcho, Body: benchBody}
	// one side for d: requests done, wall time, CPU time
	run := func(d time.Duration, one func(i int) error) (int64, time.Duration, time.Duration, error) {
		var done atomic.Int64
		var firstErr error
		var once sync.Once
		t0, cpu0 := time.Now(), processCPU()
		stop := t0.Add(d)
		var wg sync.WaitGroup
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for time.Now().Before(stop) && ctx.Err() == nil {
					if err := one(i); err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					done.Add(1)
				}
			}(i)
		}
		wg.Wait()
		return done.Load(), time.Since(t0), processCPU() - cpu0, firstErr
	}
	rawOne := func(i int) error {
		_, err := sessions[i].nc.Request(rawEchoSubject, benchBody, 10*time.Second)
		return err
	}
	meshOne := func(i int) error {
		_, err := sessions[i].c.Infer(ctx, req)
		return err
	}
	// Raw and routed alternate in blocks, as the latency part does, so both
	// see the same machine: one window each in all.
	var rawN, meshN int64
	var rawWall, meshWall, rawCPUAll, meshCPUAll time.Duration
	for range throughputBlocks {
		n, wall, cpu, err := run(window/throughputBlocks, rawOne)
		if err != nil {
			return rates{}, fmt.Errorf("raw throughput: %w", err)
		}
		rawN, rawWall, rawCPUAll = rawN+n, rawWall+wall, rawCPUAll+cpu
		n, wall, cpu, err = run(window/throughputBlocks, meshOne)
		if err != nil {
			return rates{}, fmt.Errorf("routed throughput: %w", err)
		}
		meshN, meshWall, meshCPUAll = meshN+n, meshWall+wall, meshCPUAll+cpu
	}
	perReq := func(cpu time.Duration, n int64) time.Duration {
		if n == 0 {
			return 0
		}
		return cpu / time.Duration(n)
	}
	raw, mesh := float64(rawN)/rawWall.Seconds(), float64(meshN)/meshWall.Seconds()
	rawCPU, meshCPU := perReq(rawCPUAll, rawN), perReq(meshCPUAll, meshN)
	return rates{raw: raw, mesh: mesh, rawCPU: rawCPU, meshCPU: meshCPU}, nil
}
