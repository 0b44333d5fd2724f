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
	"strconv"
)

// A side process runs one side of the decode measurement in a process of its
// own (its own server, mesh and raw responders, as newRig), so the two sides
// do not share a garbage collector: in one process the routed waves' heap
// sets when raw's waves collect and the other way round, which in a
// deployment they never do. The parent starts one per side and alternates
// waves between them as decodeAlternated does within a process.
//
// The protocol, a line each way: the side writes {"rates":null} once it is
// warmed up; then for every line "wave\n" on its stdin it runs one wave and
// writes its waveResult as a JSON line (error set when the wave failed). It
// exits at the end of its stdin.

// ServeSide is a side process: side "raw" or "routed", waves of conc
// streams, commands on in, results on out.
func ServeSide(ctx context.Context, in io.Reader, out io.Writer, side string, conc int) error {
	idx := -1
	for i, n := range sideNames {
		if n == side {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("bench side: unknown side %q (raw or routed)", side)
	}
	if conc <= 0 {
		return fmt.Errorf("bench side: concurrency %d is not positive", conc)
	}
	r, err := newRig(ctx, 0)
	if err != nil {
		return fmt.Errorf("bench side %s: start mesh: %w", side, err)
	}
	defer r.close()
	sess, err := r.session()
	if err != nil {
		return err
	}
	defer sess.close()
	one := sess.decodeSide(ctx, idx)
	if _, err := one(); err != nil { // warm up
		return fmt.Errorf("bench side %s: warm-up: %w", side, err)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(waveResult{}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if sc.Text() != "wave" {
			return fmt.Errorf("bench side %s: unknown command %q", side, sc.Text())
		}
		w, err := decodeWave(conc, one)
		if err != nil {
			w = waveResult{Err: err.Error()}
		}
		if err := enc.Encode(w); err != nil {
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

func startSide(ctx context.Context, argv []string, side string, conc int) (*sideProc, error) {
	args := append(append([]string{}, argv[1:]...), "--side", side, "--conc", strconv.Itoa(conc))
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
		return nil, fmt.Errorf("bench: start %s side process: %w", side, err)
	}
	p := &sideProc{name: side, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	if _, err := p.read(); err != nil { // its ready line
		p.stop()
		return nil, err
	}
	return p, nil
}

// read is the side's next result line.
func (p *sideProc) read() (waveResult, error) {
	var w waveResult
	if !p.out.Scan() {
		err := p.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return w, fmt.Errorf("bench: %s side process: %w", p.name, err)
	}
	if err := json.Unmarshal(p.out.Bytes(), &w); err != nil {
		return w, fmt.Errorf("bench: %s side process said %q: %w", p.name, p.out.Text(), err)
	}
	if w.Err != "" {
		return w, fmt.Errorf("bench: %s stream: %s", p.name, w.Err)
	}
	return w, nil
}

func (p *sideProc) wave() (waveResult, error) {
	if _, err := io.WriteString(p.in, "wave\n"); err != nil {
		return waveResult{}, fmt.Errorf("bench: %s side process: %w", p.name, err)
	}
	return p.read()
}

// stop ends the side: the end of its stdin, then its exit.
func (p *sideProc) stop() error {
	p.in.Close()
	return p.cmd.Wait()
}

// decodeSeparate is decodeAlternated with each side in a side process
// started by argv (the command line of ServeSide, without its flags).
func decodeSeparate(ctx context.Context, argv []string, conc, perSide int) (decodeRates, error) {
	var procs [2]*sideProc
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.stop()
			}
		}
	}()
	for i, name := range sideNames {
		p, err := startSide(ctx, argv, name, conc)
		if err != nil {
			return decodeRates{}, err
		}
		procs[i] = p
	}
	var d decodeRates
	err := alternate(waves(perSide, conc), func(side int) error {
		w, err := procs[side].wave()
		if err != nil {
			return err
		}
		d.add(side, w)
		return nil
	})
	if err != nil {
		return decodeRates{}, err
	}
	var errs []error
	for i, p := range procs {
		procs[i] = nil
		if err := p.stop(); err != nil {
			errs = append(errs, fmt.Errorf("bench: %s side process: %w", p.name, err))
		}
	}
	return d.perToken(), errors.Join(errs...)
}
