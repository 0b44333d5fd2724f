package cli

import (
	"errors"
	"os"

	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/benchrouting"
)

func newBenchRoutingCmd() *cobra.Command {
	var o benchrouting.Options
	var fleet string
	var strict bool
	var trace string
	cmd := &cobra.Command{
		Use:   "bench-routing",
		Short: "every routing strategy on a simulated fleet of mixed speed: TTFT, ITL, tokens/s, goodput, prefix-cache hits",
		Long: `bench-routing starts simulated vLLM servers of mixed speed (3 h100, 3 a10,
2 cpu by default) behind node agents, and for each workload (shared_prefix,
multi_turn, no_sharing), load level (30, 60, 90 % of the fleet's capacity)
and strategy (random, round_robin, least_connections, power_of_two,
least_latency, expected_ttft) runs a fresh mesh with cold server caches
under the same Poisson arrivals and prompts. It prints Markdown tables
(TTFT p50/p90/p99, inter-token latency, output tokens/s, goodput at
TTFT <= 2 s, the servers' prefix-cache hit rate, errors) and the targets of
issue 14, met or not. Servers run --time-scale times faster than real time;
every figure is in simulated time. --quick runs the highest load only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.Log = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if fleet != "" {
				f, err := benchrouting.ParseFleet(fleet)
				if err != nil {
					return err
				}
				o.Fleet = f
			}
			if trace != "" {
				f, err := os.Create(trace)
				if err != nil {
					return err
				}
				defer f.Close()
				o.Trace = f
			}
			rep, err := benchrouting.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if strict && !rep.Met() {
				return errors.New("bench-routing: targets missed (see Targets)")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Quick, "quick", false, "the <= 90 s variant: the highest load only, shorter runs")
	f.StringVar(&o.OutFile, "out", "", "also write the report to this file")
	f.Uint64Var(&o.Seed, "seed", benchrouting.DefaultSeed, "seed of arrivals and prompts")
	f.Float64Var(&o.TimeScale, "time-scale", benchrouting.DefaultTimeScale, "simulated seconds per real second")
	f.StringVar(&fleet, "fleet", benchrouting.DefaultFleet, "servers: [count x]profile, comma separated (profiles h100, a10, cpu)")
	f.Float64Var(&o.CacheFraction, "cache-fraction", benchrouting.DefaultCacheFraction, "share of each server's KV pool its prefix cache keeps (1: the whole pool)")
	f.StringSliceVar(&o.Strategies, "strategies", nil, "strategies to run (default all six)")
	f.StringSliceVar(&o.Workloads, "workloads", nil, "workloads to run: shared_prefix, multi_turn, no_sharing (default all)")
	f.Float64SliceVar(&o.Loads, "loads", nil, "load levels, shares of the fleet's capacity (default 0.3,0.6,0.9; 0.9 with --quick)")
	f.DurationVar(&o.Duration, "duration", 0, "how long requests arrive in each run, simulated (default 2m; 40s with --quick)")
	f.IntVar(&o.Repeat, "repeat", 1, "run every cell this many times (seeds seed, seed+1, …) and pool them; tables show the runs' TTFT p90 range")
	f.IntVar(&o.SharedPrefix.Groups, "groups", 0, "shared_prefix: number of system prompts (default 64)")
	f.BoolVar(&strict, "strict", false, "exit non-zero when a target is missed")
	f.StringVar(&trace, "trace", "", "write a CSV line per request to this file: node, the router's predicted TTFT and prefix match, the measured TTFT")
	return cmd
}
