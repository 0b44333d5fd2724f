package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// proc is one child program of the run. Every child gets its own process
// group (so a signal reaches what it forks too) and dies with the harness
// (Pdeathsig); procs.closeAll kills and waits for every one that is left.
type proc struct {
	name string // e.g. "router-1", "node-3", "nats-2"
	path string
	args []string
	log  string // stdout and stderr go here

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current process has been waited for
	exit   error         // Wait's result of the current process
	starts int
}

// procs is the registry of every child of the run.
type procs struct {
	mu  sync.Mutex
	all []*proc
}

func (ps *procs) add(name, path, log string, args ...string) *proc {
	p := &proc{name: name, path: path, args: args, log: log}
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p
}

// start runs the program (again, after it ended).
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("start %s: still running as pid %d", p.name, p.cmd.Process.Pid)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s (%s): %w", p.name, p.path, err)
	}
	p.starts++
	p.cmd, p.done, p.exit = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exit = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// running reports whether the current process has not ended.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !closed(p.done)
}

// exited returns the channel closed when the current process ends.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// exitCode is the current process's exit code (-1 killed by a signal or
// still running).
func (p *proc) exitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !closed(p.done) || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// why is a hint from the end of the log of a proc that exited: the
// conflict of a node agent restarted while its old instance is remembered.
func (p *proc) why() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	if bytes.Contains(b, []byte("409")) || bytes.Contains(b, []byte("another live instance")) {
		return " (409: registered by another live instance)"
	}
	return ""
}

// signal sends sig to the process group of the current process.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return fmt.Errorf("signal %v to %s: not running", sig, p.name)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.name, p.cmd.Process.Pid, err)
	}
	return nil
}

// kill sends SIGKILL to the group and waits for the process.
func (p *proc) kill() {
	if p.signal(syscall.SIGKILL) == nil {
		<-p.exited()
	}
}

// stop asks the process to end (SIGCONT first, in case it is stopped,
// then SIGTERM) and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.signal(syscall.SIGCONT)
	_ = p.signal(syscall.SIGTERM)
	select {
	case <-p.exited():
	case <-time.After(grace):
		p.kill()
	}
}

// closeAll ends every child: SIGTERM, then SIGKILL after grace; it returns
// when every one has been waited for.
func (ps *procs) closeAll(grace time.Duration) {
	ps.mu.Lock()
	all := append([]*proc(nil), ps.all...)
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// binary is the path of a program in dir, checked to exist.
func binary(dir, name string) (string, error) {
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("the chaos run needs %s (make build tools): %w", p, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("the chaos run needs %s to be an executable", p)
	}
	return p, nil
}

var errNotReady = errors.New("not ready")
