// Command router runs one fedmesh router instance.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := router.DefaultConfig()
	url := os.Getenv("FEDMESH_NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	natsURL := flag.String("nats-url", url, "NATS server URL (env FEDMESH_NATS_URL)")
	format := flag.String("log-format", logging.FormatConsole, "log format: console|json")
	level := flag.String("log-level", "info", "log level: debug|info|warn|error")
	prefix := flag.String("prefix", "", "subject prefix (default fed)")
	flag.StringVar(&cfg.Region, "region", "", "this router's region (locality for requests without Fed-Region)")
	flag.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "requests placed at once before answering 429")
	flag.StringVar(&cfg.Policy.Strategy, "strategy", cfg.Policy.Strategy, "load-balance strategy until fed_config router.policy sets one")
	flag.Parse()
	cfg.Subjects.Prefix = *prefix

	log := logging.Component(logging.New(os.Stderr, *format, *level), "router")
	nc, err := nats.Connect(*natsURL, nats.Name("fed-router"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *natsURL, err)
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := router.New(nc, cfg, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info().Msg("router stopping")
	return svc.Stop()
}
