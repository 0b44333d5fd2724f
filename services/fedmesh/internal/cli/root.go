// Package cli holds the fedmesh command line: dev (the whole mesh in one
// process), infer, candidates, stats, nodes and top (the TUI).
package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// globals are the flags every command shares.
type globals struct {
	natsURL string
	prefix  string
	timeout time.Duration
}

func (g *globals) subjects() subject.Space { return subject.Space{Prefix: g.prefix} }

func (g *globals) connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(g.natsURL, append([]nats.Option{nats.Name(name), nats.Timeout(3 * time.Second)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is `make run` / `fedmesh dev` running?): %w", servicecmd.Redact(g.natsURL), err)
	}
	return nc, nil
}

// withConn runs one exchange of a command: a connection named name, and a
// context bounded by --timeout.
func (g *globals) withConn(cmd *cobra.Command, name string, exchange func(ctx context.Context, nc *nats.Conn) error) error {
	nc, err := g.connect(name)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	return exchange(ctx, nc)
}

// NewRoot builds the fedmesh command tree.
func NewRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "fedmesh",
		Short:         "fedmesh: a federation gateway for ML inference on NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	defURL := os.Getenv(servicecmd.EnvNatsURL)
	if defURL == "" {
		defURL = nats.DefaultURL
	}
	root.PersistentFlags().StringVar(&g.natsURL, "nats-url", defURL, "NATS server URL (env "+servicecmd.EnvNatsURL+")")
	root.PersistentFlags().StringVar(&g.prefix, "prefix", subject.DefaultPrefix, "subject prefix")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 30*time.Second, "request deadline")
	root.AddCommand(newDevCmd(g), newInferCmd(g), newCandidatesCmd(g), newStatsCmd(g), newNodesCmd(g), newTopCmd(g), newBenchCmd(), newChaosCmd(), newSimserverCmd())
	root.AddCommand(newConfigCmds(g)...)
	root.AddCommand(newAuthCmd(g))
	root.AddCommand(newBenchRoutingCmd())
	return root
}
