package bench

import (
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// sideEnv makes this test binary a side process (ServeSide) instead of
// running tests, with the flags after "--": the tests below start it so.
const sideEnv = "FEDMESH_BENCH_SIDE_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(sideEnv) == "" {
		os.Exit(m.Run())
	}
	fs := flag.NewFlagSet("side", flag.ExitOnError)
	name := fs.String("side", "", "")
	var prof Profiles
	fs.StringVar(&prof.CPU, "cpuprofile", "", "")
	fs.StringVar(&prof.Mem, "memprofile", "", "")
	floor := fs.Bool("floor", false, "")
	args := os.Args[1:]
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	_ = fs.Parse(args)
	if err := ServeSide(context.Background(), os.Stdin, os.Stdout, *name, prof, *floor); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// sideArgv starts this test binary as a side process.
func sideArgv(t *testing.T) []string {
	t.Setenv(sideEnv, "1")
	return []string{os.Args[0], "-test.run=^$", "--"}
}

// Both ways of running the sides, in this process and a process each, give
// every measurement its samples from both sides, over real meshes.
func TestSides(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three meshes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rg, err := newRig(ctx, 0, false)
	require.NoError(t, err)
	defer rg.close()
	dir := t.TempDir()
	prof := Profiles{CPU: filepath.Join(dir, "cpu"), Mem: filepath.Join(dir, "mem")}
	procs, err := startSides(ctx, sideArgv(t), func(side string) []string { return prof.of(side).args() })
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			_ = stopSides(procs)
		}
	}()

	for _, wy := range []sidesWay{{"in this process", localSides(rg)}, {"a process each", procs}} {
		t.Run(wy.name, func(t *testing.T) {
			d, err := decode(ctx, wy.sides, 2, 3) // 2 waves of 2 streams per side
			require.NoError(t, err)
			for side, rs := range [][]float64{d.raw, d.mesh} {
				require.Len(t, rs, 4, sideNames[side])
				for _, r := range rs {
					assert.Positive(t, r, sideNames[side])
				}
			}
			assert.Positive(t, d.rawCPU)
			assert.Positive(t, d.meshCPU)

			lat, err := latency(ctx, wy.sides, 150) // blocks of 100 and 50
			require.NoError(t, err)
			for _, ds := range []dist{lat.raw, lat.mesh} {
				assert.Equal(t, 150, ds.n)
				assert.Positive(t, ds.p50)
				assert.GreaterOrEqual(t, ds.p99, ds.p50)
			}

			tp, err := throughput(ctx, wy.sides, 4, 300*time.Millisecond)
			require.NoError(t, err)
			assert.Positive(t, tp.raw)
			assert.Positive(t, tp.mesh)
			assert.Positive(t, tp.rawCPU)
			assert.Positive(t, tp.meshCPU)
			// counted in the process that ran the side, and passed back over the pipe
			assert.Positive(t, tp.rawAllocs.Objects)
			assert.Positive(t, tp.rawAllocs.Bytes)
			assert.Greater(t, tp.meshAllocs.Objects, tp.rawAllocs.Objects, "a routed request is 4 messages, raw's 2")
		})
	}

	// each side process wrote its own profiles as it ended
	stopped = true
	require.NoError(t, stopSides(procs))
	for _, side := range sideNames {
		for _, path := range []string{prof.of(side).CPU, prof.of(side).Mem} {
			// a pprof profile is a gzipped protocol buffer
			f, err := os.Open(path)
			require.NoError(t, err, side)
			zr, err := gzip.NewReader(f)
			require.NoError(t, err, "%s: %s is gzipped", side, path)
			n, err := io.Copy(io.Discard, zr)
			_ = f.Close()
			assert.NoError(t, err, "%s: %s", side, path)
			assert.Positive(t, n, "%s: %s holds a profile", side, path)
		}
	}
}

// A floor rig's raw echo answers by the mesh's four messages: every request
// gets its final (the request's body, done, its request id carried by the
// dispatch) from the plain node, and the plain router reads a done ack for
// each; a side process started with --floor answers too.
func TestFloorAnswersByTheMeshMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two meshes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rg, err := newRig(ctx, 0, true)
	require.NoError(t, err)
	defer rg.close()
	sess, err := rg.clients(1)
	require.NoError(t, err)
	const n = 20
	for range n {
		m, err := sess[0].nc.RequestMsg(&nats.Msg{Subject: rawEchoSubject, Header: floorRequest, Data: benchBody}, 10*time.Second)
		require.NoError(t, err)
		assert.Equal(t, benchBody, m.Data)
		assert.Equal(t, wire.StatusDone, m.Header.Get(wire.HdrStatus))
		// the request's headers reached the node by the dispatch
		assert.Equal(t, floorRequest.Get(wire.HdrRequestID), m.Header.Get(wire.HdrRequestID))
	}
	assert.Eventually(t, func() bool { return rg.floorAcks.Load() == n }, 5*time.Second, 10*time.Millisecond,
		"a done ack per request, got %d", rg.floorAcks.Load())

	p, err := startSide(ctx, sideArgv(t), "raw", "--floor")
	require.NoError(t, err)
	defer func() { assert.NoError(t, p.stop()) }()
	res, err := p.run(ctx, sideOp{Op: opLatency, N: 5})
	require.NoError(t, err)
	assert.Len(t, res.Latencies, 5)
}

// A side refuses what it cannot run with an error, never a hang: an
// unknown side name before its rig starts, a bad op as the op's error.
func TestSideRefuses(t *testing.T) {
	var out strings.Builder
	err := ServeSide(context.Background(), strings.NewReader(""), &out, "both", Profiles{}, false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown side "both"`)
	assert.Empty(t, out.String(), "no ready line")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = startSide(ctx, sideArgv(t), "both")
	require.Error(t, err, "a side process that exits before it is ready")
	assert.Contains(t, err.Error(), "both side process")

	p, err := startSide(ctx, sideArgv(t), "raw")
	require.NoError(t, err)
	defer func() { assert.NoError(t, p.stop()) }()
	for _, tc := range []struct {
		name string
		op   sideOp
		want string
	}{
		{"unknown op", sideOp{Op: "fly", N: 1}, `unknown op "fly"`},
		{"nothing to run", sideOp{Op: opLatency}, "latency of 0 is not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.run(ctx, tc.op)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	res, err := p.run(ctx, sideOp{Op: opLatency, N: 3})
	require.NoError(t, err, "the side goes on after a refused op")
	assert.Len(t, res.Latencies, 3)
}

// --only names one part; anything else is refused before a mesh starts,
// never a run that measures nothing.
func TestOnlyNamesAPart(t *testing.T) {
	for _, tc := range []struct {
		only string
		ok   bool
	}{
		{"", true},
		{"stream", true},
		{"scale", true},
		{"reqreply,stream", false},
		{"Stream", false},
	} {
		t.Run(tc.only, func(t *testing.T) {
			if tc.ok {
				assert.NoError(t, (&Options{Only: tc.only}).check())
				return
			}
			var out strings.Builder
			err := Run(context.Background(), Options{Out: &out, Only: tc.only})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "is not a part")
			assert.Empty(t, out.String(), "nothing measured")
		})
	}
}
