package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"
)

// The two sides of a side-by-side measurement, by index.
const (
	sideRaw = iota
	sideRouted
)

var sideNames = [2]string{"raw", "routed"}

// A side runs one side's share of a measurement (sideOp) and says what it
// measured (sideResult). A localSide runs it in this process, on the rig
// both sides share; a sideProc hands it to a side process, which runs it on
// a rig of its own: the two sides then do not share a garbage collector. In
// one process the routed side's heap sets when raw collects and the other
// way round, which in a deployment they never do (README → Performance).
type side interface {
	run(ctx context.Context, op sideOp) (sideResult, error)
}

// sideOp is one command to a side: a wave of N streams at once (opDecode),
// a block of N sequential requests (opLatency), or N clients sending
// requests back to back for Window (opThroughput).
type sideOp struct {
	Op     string        `json:"op"`
	N      int           `json:"n"`
	Window time.Duration `json:"window_ns,omitempty"`
}

const (
	opDecode     = "decode"
	opLatency    = "latency"
	opThroughput = "throughput"
)

// sideResult is what an op measured; CPU is the CPU time of the side's
// process over it (in one process: both sides' server and mesh).
type sideResult struct {
	Rates     []float64       `json:"rates,omitempty"`        // decode: each stream's decode rate
	Latencies []time.Duration `json:"latencies_ns,omitempty"` // latency: each request's
	Done      int64           `json:"done,omitempty"`         // throughput: requests answered
	Wall      time.Duration   `json:"wall_ns,omitempty"`      // throughput: the block's wall time
	CPU       time.Duration   `json:"cpu_ns,omitempty"`
	Allocs    heapAllocs      `json:"allocs,omitzero"` // throughput: the process's heap allocations in the block
	Err       string          `json:"error,omitempty"`
}

// localSide is one side on a rig of this process.
type localSide struct {
	r    *rig
	side int
}

func (l localSide) run(ctx context.Context, op sideOp) (sideResult, error) {
	res, err := l.runOp(ctx, op)
	if err != nil {
		return sideResult{}, fmt.Errorf("%s: %w", sideNames[l.side], err)
	}
	return res, nil
}

func (l localSide) runOp(ctx context.Context, op sideOp) (sideResult, error) {
	if op.N <= 0 {
		return sideResult{}, fmt.Errorf("bench: %s of %d is not positive", op.Op, op.N)
	}
	n := 1 // sessions: one client, or throughput's N
	if op.Op == opThroughput {
		n = op.N
	}
	sess, err := l.r.clients(n)
	if err != nil {
		return sideResult{}, err
	}
	switch op.Op {
	case opDecode:
		return decodeWave(op.N, sess[0].decodeStream(ctx, l.side))
	case opLatency:
		return latencyBlock(op.N, sess[0].request(ctx, l.side))
	case opThroughput:
		ones := make([]func() error, n)
		for i, s := range sess {
			ones[i] = s.request(ctx, l.side)
		}
		return throughputBlock(ctx, op.Window, ones)
	}
	return sideResult{}, fmt.Errorf("bench: unknown op %q", op.Op)
}

// localSides are both sides on r.
func localSides(r *rig) [2]side { return [2]side{localSide{r, sideRaw}, localSide{r, sideRouted}} }

// requestSide is a side that only sends requests, with one (opLatency):
// two meshes compared on latency (secure.go).
type requestSide struct {
	name string
	one  func() error
}

func (q requestSide) run(_ context.Context, op sideOp) (sideResult, error) {
	if op.Op != opLatency || op.N <= 0 {
		return sideResult{}, fmt.Errorf("bench: %s: %s of %d is not a latency block", q.name, op.Op, op.N)
	}
	res, err := latencyBlock(op.N, q.one)
	if err != nil {
		return sideResult{}, fmt.Errorf("%s: %w", q.name, err)
	}
	return res, nil
}

// alternate runs rounds of one op per side, which side goes first
// alternating from round to round, so both sides see the same machine.
func alternate(rounds int, one func(side int) error) error {
	for round := range rounds {
		first := round % 2
		for _, side := range [2]int{first, 1 - first} {
			if err := one(side); err != nil {
				return err
			}
		}
	}
	return nil
}

// ServeSide is a side process (`fedmesh bench-side`): side "raw" or
// "routed" on a rig of its own, one sideOp per JSON line on in, its
// sideResult as a JSON line on out (Err set when the op failed). It first
// writes an empty result once its rig is up, and ends at the end of in,
// writing its profiles then.
// floor makes a raw side's echo answer by the mesh's messages (Options.Floor).
func ServeSide(ctx context.Context, in io.Reader, out io.Writer, name string, prof Profiles, floor bool) error {
	idx := slices.Index(sideNames[:], name)
	if idx < 0 {
		return fmt.Errorf("bench side: unknown side %q (raw or routed)", name)
	}
	stopProfiles, err := prof.Start()
	if err != nil {
		return fmt.Errorf("bench side %s: %w", name, err)
	}
	defer stopProfiles()
	r, err := newRig(ctx, 0, floor)
	if err != nil {
		return fmt.Errorf("bench side %s: start mesh: %w", name, err)
	}
	defer r.close()
	s := localSide{r, idx}
	enc := json.NewEncoder(out)
	if err := enc.Encode(sideResult{}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var op sideOp
		if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
			return fmt.Errorf("bench side %s: command %q: %w", name, sc.Text(), err)
		}
		res, err := s.run(ctx, op)
		if err != nil {
			res = sideResult{Err: err.Error()}
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return sc.Err()
}

// sideProc is a running side process, seen from the parent.
type sideProc struct {
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
}

// startSide starts the side process of name by argv (ServeSide's command
// line without --side) and more args, and waits until its rig is up.
func startSide(ctx context.Context, argv []string, name string, more ...string) (*sideProc, error) {
	args := append(append(append([]string{}, argv[1:]...), "--side", name), more...)
	cmd := exec.CommandContext(ctx, argv[0], args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s side process: %w", name, err)
	}
	p := &sideProc{name: name, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	p.out.Buffer(nil, 16<<20) // a latency block's line is ≈ 2 kB, a decode wave's ≈ 1 kB; room to spare
	if _, err := p.read(); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// startSides starts both side processes, each with the args more gives its
// name; stop them with stopSides.
func startSides(ctx context.Context, argv []string, more func(side string) []string) ([2]side, error) {
	var sides [2]side
	for i, name := range sideNames {
		p, err := startSide(ctx, argv, name, more(name)...)
		if err != nil {
			_ = stopSides(sides)
			return [2]side{}, err
		}
		sides[i] = p
	}
	return sides, nil
}

// stopSides stops the side processes among sides.
func stopSides(sides [2]side) error {
	var errs []error
	for _, s := range sides {
		if p, ok := s.(*sideProc); ok && p != nil {
			if err := p.stop(); err != nil {
				errs = append(errs, fmt.Errorf("bench: %s side process: %w", p.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (p *sideProc) run(_ context.Context, op sideOp) (sideResult, error) {
	line, err := json.Marshal(op)
	if err != nil {
		return sideResult{}, err
	}
	if _, err := p.in.Write(append(line, '\n')); err != nil {
		return sideResult{}, fmt.Errorf("bench: %s side process: %w", p.name, err)
	}
	return p.read()
}

// read is the side's next result line.
func (p *sideProc) read() (sideResult, error) {
	var res sideResult
	if !p.out.Scan() {
		err := p.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return res, fmt.Errorf("bench: %s side process: %w", p.name, err)
	}
	if err := json.Unmarshal(p.out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("bench: %s side process said %q: %w", p.name, p.out.Text(), err)
	}
	if res.Err != "" { // already names the side
		return res, errors.New(res.Err)
	}
	return res, nil
}

// stop ends the side: the end of its stdin, then its exit.
func (p *sideProc) stop() error {
	_ = p.in.Close()
	return p.cmd.Wait()
}
