package cli

import (
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
			return bench.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Samples, "samples", 2000, "sequential requests per side for latency")
	f.DurationVar(&o.Window, "window", 0, "throughput window per side (default 3s)")
	f.IntVar(&o.Clients, "clients", 64, "concurrent clients for throughput")
	f.IntVar(&o.Streams, "streams", 256, "streams per side and concurrency level")
	f.IntVar(&o.ScaleNodes, "scale-nodes", 10000, "simulated nodes for the scale run (0 skips it)")
	f.StringVar(&o.BinDir, "bin-dir", "bin", "where `make build` put the catalog, health and router binaries")
	f.StringVar(&o.Only, "only", "", "run one part: reqreply, stream, cancel, decisions or scale")
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the run to this file")
	return cmd
}
