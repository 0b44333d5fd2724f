package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/bench"
)

func newBenchCmd() *cobra.Command {
	var o bench.Options
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "benchmark the mesh against raw NATS side by side and print Markdown tables",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			o.SideCommand = []string{exe, benchSideUse}
			return bench.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Samples, "samples", bench.DefaultSamples, "sequential requests per side for latency")
	f.DurationVar(&o.Window, "window", bench.DefaultWindow, "throughput window per side")
	f.IntVar(&o.Clients, "clients", bench.DefaultClients, "concurrent clients for throughput")
	f.IntVar(&o.Streams, "streams", bench.DefaultStreams, "streams per side and concurrency level")
	f.IntVar(&o.ScaleNodes, "scale-nodes", bench.DefaultScaleNodes, "simulated nodes for the scale run (0 skips it)")
	f.StringVar(&o.BinDir, "bin-dir", "bin", "where `make build` put the catalog, health and router binaries")
	f.StringVar(&o.Only, "only", "", "run one part: "+strings.Join(bench.Parts, ", "))
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file (each side process its own, FILE.<part>.<side>)")
	f.StringVar(&o.MemProfile, "memprofile", "", "write a heap allocation profile of the run to this file (each side process its own, FILE.<part>.<side>)")
	f.DurationVar(&o.OutcomeWindow, "outcome-window", 0, "the bench nodes' outcome_window (0: each outcome at once, the node default)")
	f.BoolVar(&o.Floor, "floor", false, "request-reply's raw side answers by the mesh's own four messages with no fedmesh code: the protocol's floor")
	return cmd
}

const benchSideUse = "bench-side"

// newBenchSideCmd is one side of bench's request-reply and decode
// measurements in a process of its own (bench.ServeSide): bench starts it,
// users do not.
func newBenchSideCmd() *cobra.Command {
	var (
		side  string
		prof  bench.Profiles
		floor bool
	)
	cmd := &cobra.Command{
		Use:    benchSideUse,
		Short:  "one side (raw or routed) of bench's side-by-side measurements in a process of its own, driven on stdin",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.ServeSide(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), side, prof, floor)
		},
	}
	cmd.Flags().StringVar(&side, "side", "", "raw or routed")
	cmd.Flags().StringVar(&prof.CPU, "cpuprofile", "", "write a CPU profile of the side to this file")
	cmd.Flags().StringVar(&prof.Mem, "memprofile", "", "write a heap allocation profile of the side to this file")
	cmd.Flags().BoolVar(&floor, "floor", false, "the raw side's echo answers by the mesh's messages (bench --floor)")
	return cmd
}
