// Command fedmesh is the mesh's command line: `fedmesh dev` runs the whole
// mesh in one process; infer, candidates, stats and nodes talk to a mesh.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cli.NewRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fedmesh:", err)
		os.Exit(cli.ExitCode(err))
	}
}
