package cli

import (
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/chaos"
)

func newChaosCmd() *cobra.Command {
	var o chaos.Options
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "the fault run: a real clustered mesh of separate processes under load, faults and bad input, checked on the wire",
		Long: `chaos starts 3 nats-servers (R3 buckets), 2 catalogs, 2 health, 2 routers and
synthetic node agents from --bin-dir, loads them with closed-loop clients that
check every answer token by token on the wire, and in turn SIGKILLs a node agent
mid-stream, SIGTERMs one, SIGKILLs a router, SIGKILLs the JetStream meta leader
(restarted after a while), SIGSTOPs a node agent and SIGKILLs a health instance;
then it sends malformed input on every subject. Before the first fault the
load runs without faults (--calm), where every request must be a strict
success and none a 503. It prints Markdown tables.
Exit status is non-zero on harness errors, and with --strict when the targets
of issue 12 are missed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out, o.Log = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return chaos.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 0, "load duration: warm-up, the fault-free phase, then the faults spread over the rest (default 135s; 36s with --short)")
	f.DurationVar(&o.Calm, "calm", 0, "fault-free load after the warm-up, before the first fault; all of it must be strict with no 503 (default 15s; 3s with --short)")
	f.IntVar(&o.Clients, "clients", 0, "closed-loop clients, half streamed (default 24; 10 with --short)")
	f.IntVar(&o.Nodes, "nodes", 0, "synthetic node agents (default 6; 4 with --short)")
	f.StringVar(&o.BinDir, "bin-dir", chaos.DefaultBinDir, "where make build / make tools put nats-server, catalog, health, router and nodeagent")
	f.Uint64Var(&o.Seed, "seed", chaos.DefaultSeed, "seed of node shapes, prompts and request ids")
	f.BoolVar(&o.Short, "short", false, "the <= 60 s variant (fewer nodes and clients, shorter holds, every fault)")
	f.BoolVar(&o.Strict, "strict", false, "exit non-zero when the issue's targets are missed")
	f.StringVar(&o.OutFile, "out", "", "also write the tables to this file")
	f.BoolVar(&o.Keep, "keep", false, "keep the work dir (configs, logs, JetStream stores)")
	f.StringSliceVar(&o.Faults, "faults", nil, "run only these faults: kill-node, drain-node, kill-router, kill-server, stop-node, kill-health")
	f.BoolVar(&o.SkipInput, "skip-input", false, "skip the malformed input")
	return cmd
}
