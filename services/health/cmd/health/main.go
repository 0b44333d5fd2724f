// Command health runs one fedmesh health instance.
package main

import (
	"flag"

	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	cfg := health.DefaultConfig()
	servicecmd.Main(command(&cfg))
}

// command is the health program around cfg, which its flags fill.
func command(cfg *health.Config) servicecmd.Command {
	return servicecmd.Command{
		Name: "health",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "node heartbeat period")
			fs.DurationVar(&cfg.CheckInterval, "check-interval", cfg.CheckInterval, "active probe period for silent nodes")
			fs.DurationVar(&cfg.ProbeTimeout, "probe-timeout", cfg.ProbeTimeout, "timeout of one probe")
			fs.DurationVar(&cfg.ResetTimeout, "reset-timeout", cfg.ResetTimeout, "open circuit to half_open after")
			fs.DurationVar(&cfg.DegradedLatency, "degraded-latency", cfg.DegradedLatency, "a success slower than this degrades a node")
			fs.IntVar(&cfg.FailureThreshold, "failure-threshold", cfg.FailureThreshold, "consecutive failures that open a circuit")
			fs.IntVar(&cfg.HalfOpenSuccesses, "half-open-successes", cfg.HalfOpenSuccesses, "successes that close a half-open circuit")
			fs.DurationVar(&cfg.ForgetAfter, "forget-after", cfg.ForgetAfter, "drop deregistered nodes silent for this long")
		},
		Build: func(env servicecmd.Env) (servicecmd.Service, error) {
			cfg.Subjects.Prefix = env.Common.Prefix
			return health.New(env.NC, *cfg, env.Log)
		},
	}
}
