// Command health runs one fedmesh health instance.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := health.DefaultConfig()
	var common servicecmd.Common
	common.Register(flag.CommandLine)
	flag.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "node heartbeat period")
	flag.DurationVar(&cfg.CheckInterval, "check-interval", cfg.CheckInterval, "active probe period for silent nodes")
	flag.DurationVar(&cfg.ProbeTimeout, "probe-timeout", cfg.ProbeTimeout, "timeout of one probe")
	flag.DurationVar(&cfg.ResetTimeout, "reset-timeout", cfg.ResetTimeout, "open circuit to half_open after")
	flag.DurationVar(&cfg.DegradedLatency, "degraded-latency", cfg.DegradedLatency, "a success slower than this degrades a node")
	flag.IntVar(&cfg.FailureThreshold, "failure-threshold", cfg.FailureThreshold, "consecutive failures that open a circuit")
	flag.IntVar(&cfg.HalfOpenSuccesses, "half-open-successes", cfg.HalfOpenSuccesses, "successes that close a half-open circuit")
	flag.DurationVar(&cfg.ForgetAfter, "forget-after", cfg.ForgetAfter, "drop deregistered nodes silent for this long")
	flag.Parse()
	cfg.Subjects.Prefix = common.Prefix
	return servicecmd.Run(common, "health", func(nc *nats.Conn, log zerolog.Logger) (servicecmd.Service, error) {
		return health.New(nc, cfg, log)
	})
}
