// Command router runs one fedmesh router instance.
package main

import (
	"flag"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	cfg := router.DefaultConfig()
	servicecmd.Main(command(&cfg))
}

// command is the router program; its flags land in cfg.
func command(cfg *router.Config) servicecmd.Command {
	return servicecmd.Command{
		Name: "router",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&cfg.Region, "region", cfg.Region, "this router's region (locality for requests without Fed-Region)")
			fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "requests placed at once before answering 429")
			fs.IntVar(&cfg.MaxQueue, "max-queue", cfg.MaxQueue, "requests waiting for a free slot when every eligible node is full, before answering 429 at once")
			fs.IntVar(&cfg.Policy.MaxQueueMs, "max-queue-ms", cfg.Policy.MaxQueueMs, "how long a request waits for a free slot before the router answers 429, until fed_config router.policy sets max_queue_ms")
			fs.StringVar(&cfg.Policy.Strategy, "strategy", cfg.Policy.Strategy, "load-balance strategy until fed_config router.policy sets one")
		},
		Build: func(env servicecmd.Env) (servicecmd.Service, error) {
			cfg.Subjects.Prefix = env.Common.Prefix
			cfg.InstanceID = env.ID
			return router.New(env.NC, *cfg, env.Log)
		},
	}
}
