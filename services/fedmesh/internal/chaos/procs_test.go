package chaos

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// groupAlive reports whether any process of group pgid is left.
func groupAlive(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// A child's own children die with it: every child runs in its own process
// group and closeAll kills and waits for the group.
func TestProcsKillWholeGroup(t *testing.T) {
	var ps procs
	p := ps.add("sh", "/bin/sh", filepath.Join(t.TempDir(), "sh.log"), "-c", "sleep 60 & sleep 60")
	require.NoError(t, p.start())
	pgid := p.cmd.Process.Pid
	require.True(t, p.running())
	require.Error(t, p.start(), "a running proc is not started twice")
	ps.closeAll(200 * time.Millisecond)
	assert.False(t, p.running())
	natsembed.Eventually(t, 5*time.Second, func() error {
		if groupAlive(pgid) {
			return errors.New("the group's background sleep is still alive")
		}
		return nil
	})
}

func TestProcsRestartAndExitCode(t *testing.T) {
	var ps procs
	p := ps.add("false", "/bin/sh", filepath.Join(t.TempDir(), "x.log"), "-c", "exit 3")
	for range 2 {
		require.NoError(t, p.start())
		<-p.exited()
		assert.Equal(t, 3, p.exitCode())
		assert.False(t, p.running())
	}
	assert.Equal(t, 2, p.starts)
	assert.Error(t, p.signal(syscall.SIGTERM), "no signal to an ended proc")
}

// A stopped child still ends: stop sends SIGCONT before SIGTERM.
func TestProcsStopAStoppedChild(t *testing.T) {
	var ps procs
	p := ps.add("sleep", "/bin/sh", filepath.Join(t.TempDir(), "s.log"), "-c", "sleep 60")
	require.NoError(t, p.start())
	require.NoError(t, p.signal(syscall.SIGSTOP))
	start := time.Now()
	p.stop(5 * time.Second)
	assert.False(t, p.running())
	assert.Less(t, time.Since(start), 4*time.Second, "SIGTERM reached it without waiting for the kill")
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(9)
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, p := range ports {
		assert.False(t, seen[p])
		seen[p] = true
	}
}

func TestBinaryMissing(t *testing.T) {
	_, err := binary(t.TempDir(), "nats-server")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make build tools")
}
