package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runBenchRouting(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := NewRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"bench-routing"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// The command runs a real (tiny) benchmark from its flags: the report on
// stdout and in --out, a progress line per run on stderr.
func TestBenchRoutingCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two meshes")
	}
	file := filepath.Join(t.TempDir(), "routing.md")
	stdout, stderr, err := runBenchRouting(t, "--fleet", "h100,a10", "--strategies", "power_of_two,expected_ttft",
		"--workloads", "no_sharing", "--loads", "0.5", "--duration", "15s", "--repeat", "2", "--out", file)
	require.NoError(t, err, stderr)
	written, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, stdout, string(written))
	assert.Contains(t, stdout, "### no_sharing")
	assert.Contains(t, stdout, "| 50% | power_of_two |")
	assert.Contains(t, stdout, "| 50% | **expected_ttft** (default) |")
	assert.Contains(t, stdout, "share h100/a10 |")
	assert.Contains(t, stdout, "Every cell ran 2 times (seeds 1…2)")
	assert.Regexp(t, `\| 50% \| power_of_two \| [0-9.]+ \| [^|]+ \| [^|]+ \([^|]+–[^|]+\) \|`, stdout, "TTFT p90 with the runs' range")
	assert.Contains(t, stdout, "no_sharing at 50%: TTFT p90, expected_ttft vs power_of_two")
	assert.Equal(t, 2, strings.Count(stderr, "no_sharing"), stderr)
}

func TestBenchRoutingFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--fleet", "2xtpu"}, `fleet "2xtpu"`},
		{[]string{"--strategies", "fastest"}, `strategy "fastest"`},
		{[]string{"--workloads", "chat"}, `workload "chat"`},
		{[]string{"--loads", "0"}, "load 0"},
		{[]string{"--cache-fraction", "1.5"}, "cache fraction 1.5"},
		{[]string{"--repeat", "-1"}, "repeat -1"},
		{[]string{"--groups", "-2"}, "shared_prefix {Groups:-2"},
	} {
		_, _, err := runBenchRouting(t, c.args...)
		assert.ErrorContains(t, err, c.want, "%v", c.args)
	}
}
