package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sideEnv makes this test binary a side process (ServeSide) instead of
// running tests: TestDecodeSeparate starts it so, with the flags after "--".
const sideEnv = "FEDMESH_BENCH_SIDE_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(sideEnv) == "" {
		os.Exit(m.Run())
	}
	fs := flag.NewFlagSet("side", flag.ExitOnError)
	side := fs.String("side", "", "")
	conc := fs.Int("conc", 0, "")
	args := os.Args[1:]
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	_ = fs.Parse(args)
	if err := ServeSide(context.Background(), os.Stdin, os.Stdout, *side, *conc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Each side in a process of its own: both processes stream their 4096-token
// streams, and every wave's rates and CPU come back to the parent.
func TestDecodeSeparate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two meshes in processes of their own")
	}
	t.Setenv(sideEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := []string{os.Args[0], "-test.run=^$", "--"}
	d, err := decodeSeparate(ctx, argv, 2, 4)
	require.NoError(t, err)
	for side, rates := range [][]float64{d.raw, d.mesh} {
		require.Len(t, rates, 4, sideNames[side])
		for _, r := range rates {
			assert.Positive(t, r, sideNames[side])
		}
	}
	assert.Positive(t, d.rawCPU)
	assert.Positive(t, d.meshCPU)
}

// A side process that cannot start says why, and the parent does not wait
// for a ready line that never comes.
func TestServeSideRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, side, in string
		conc           int
		want           string
	}{
		{"unknown side", "both", "", 1, `unknown side "both"`},
		{"no concurrency", "raw", "", 0, "concurrency 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := ServeSide(context.Background(), strings.NewReader(tc.in), &out, tc.side, tc.conc)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Empty(t, out.String(), "no ready line")
		})
	}
	t.Run("side process exits before ready", func(t *testing.T) {
		t.Setenv(sideEnv, "1")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// conc 0 makes the side refuse at once
		_, err := startSide(ctx, []string{os.Args[0], "-test.run=^$", "--"}, "raw", 0)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "raw side process")
	})
}
