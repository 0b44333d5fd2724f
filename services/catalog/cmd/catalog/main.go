// Command catalog runs one fedmesh catalog instance.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/nats-io/nats.go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "catalog:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := catalog.DefaultConfig()
	url := os.Getenv("FEDMESH_NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	natsURL := flag.String("nats-url", url, "NATS server URL (env FEDMESH_NATS_URL)")
	format := flag.String("log-format", logging.FormatConsole, "log format: console|json")
	level := flag.String("log-level", "info", "log level: debug|info|warn|error")
	prefix := flag.String("prefix", "", "subject prefix (default fed)")
	flag.DurationVar(&cfg.NodeTTL, "node-ttl", cfg.NodeTTL, "remove nodes silent for this long")
	flag.Parse()
	cfg.Subjects.Prefix = *prefix

	log := logging.Component(logging.New(os.Stderr, *format, *level), "catalog")
	nc, err := nats.Connect(*natsURL, nats.Name("fed-catalog"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *natsURL, err)
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := catalog.New(nc, cfg, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info().Msg("catalog stopping")
	return svc.Stop()
}
