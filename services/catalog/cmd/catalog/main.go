// Command catalog runs one fedmesh catalog instance.
package main

import (
	"flag"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	cfg := catalog.DefaultConfig()
	servicecmd.Main(servicecmd.Command{
		Name: "catalog",
		Flags: func(fs *flag.FlagSet) {
			fs.DurationVar(&cfg.NodeTTL, "node-ttl", cfg.NodeTTL, "remove nodes silent for this long")
			fs.DurationVar(&cfg.TakeoverSilence, "takeover-silence", cfg.TakeoverSilence,
				"let another agent instance register a node id whose instance is silent for this long (at most node-ttl)")
		},
		Build: func(env servicecmd.Env) (servicecmd.Service, error) {
			cfg.Subjects.Prefix = env.Common.Prefix
			return catalog.New(env.NC, cfg, env.Log)
		},
	})
}
