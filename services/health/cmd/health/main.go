// Command health runs one fedmesh health instance.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/nats-io/nats.go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := health.DefaultConfig()
	url := os.Getenv("FEDMESH_NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	natsURL := flag.String("nats-url", url, "NATS server URL (env FEDMESH_NATS_URL)")
	format := flag.String("log-format", logging.FormatConsole, "log format: console|json")
	level := flag.String("log-level", "info", "log level: debug|info|warn|error")
	prefix := flag.String("prefix", "", "subject prefix (default fed)")
	flag.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "node heartbeat period")
	flag.DurationVar(&cfg.CheckInterval, "check-interval", cfg.CheckInterval, "active probe period for silent nodes")
	flag.DurationVar(&cfg.ProbeTimeout, "probe-timeout", cfg.ProbeTimeout, "timeout of one probe")
	flag.DurationVar(&cfg.ResetTimeout, "reset-timeout", cfg.ResetTimeout, "open circuit to half_open after")
	flag.DurationVar(&cfg.DegradedLatency, "degraded-latency", cfg.DegradedLatency, "a success slower than this degrades a node")
	flag.IntVar(&cfg.FailureThreshold, "failure-threshold", cfg.FailureThreshold, "consecutive failures that open a circuit")
	flag.IntVar(&cfg.HalfOpenSuccesses, "half-open-successes", cfg.HalfOpenSuccesses, "successes that close a half-open circuit")
	flag.DurationVar(&cfg.ForgetAfter, "forget-after", cfg.ForgetAfter, "drop deregistered nodes silent for this long")
	flag.Parse()
	cfg.Subjects.Prefix = *prefix

	log := logging.Component(logging.New(os.Stderr, *format, *level), "health")
	nc, err := nats.Connect(*natsURL, nats.Name("fed-health"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *natsURL, err)
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := health.New(nc, cfg, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info().Msg("health stopping")
	return svc.Stop()
}
