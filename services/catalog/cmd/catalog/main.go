// Command catalog runs one fedmesh catalog instance.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "catalog:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := catalog.DefaultConfig()
	var common servicecmd.Common
	common.Register(flag.CommandLine)
	flag.DurationVar(&cfg.NodeTTL, "node-ttl", cfg.NodeTTL, "remove nodes silent for this long")
	flag.Parse()
	cfg.Subjects.Prefix = common.Prefix
	return servicecmd.Run(common, "catalog", func(nc *nats.Conn, log zerolog.Logger) (servicecmd.Service, error) {
		return catalog.New(nc, cfg, log)
	})
}
