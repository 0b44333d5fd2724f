// Command router runs one fedmesh router instance.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := router.DefaultConfig()
	var common servicecmd.Common
	common.Register(flag.CommandLine)
	flag.StringVar(&cfg.Region, "region", "", "this router's region (locality for requests without Fed-Region)")
	flag.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "requests placed at once before answering 429")
	flag.StringVar(&cfg.Policy.Strategy, "strategy", cfg.Policy.Strategy, "load-balance strategy until fed_config router.policy sets one")
	flag.Parse()
	cfg.Subjects.Prefix = common.Prefix
	return servicecmd.Run(common, "router", func(nc *nats.Conn, log zerolog.Logger) (servicecmd.Service, error) {
		return router.New(nc, cfg, log)
	})
}
