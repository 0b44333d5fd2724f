// Command nodeagent runs one fedmesh node: it registers the node's models
// with the catalog, serves dispatches with a backend (an OpenAI-compatible
// model server, or the synthetic stand-in) and drains on SIGTERM.
//
// Settings come from a YAML file (--config), then environment variables,
// then flags, each overriding the one before.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/logging"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stderr))
}

// setting is one flag with the environment variable that also sets it.
type setting struct {
	flag, env, def, usage string
	apply                 func(fc *nodeagent.FileConfig, v string) error
}

// runOptions are the process settings that are not the node's.
type runOptions struct {
	natsURL, logFormat, logLevel string
}

func settings(o *runOptions) []setting {
	dur := func(dst func(fc *nodeagent.FileConfig) *time.Duration) func(*nodeagent.FileConfig, string) error {
		return func(fc *nodeagent.FileConfig, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			*dst(fc) = d
			return nil
		}
	}
	str := func(dst func(fc *nodeagent.FileConfig) *string) func(*nodeagent.FileConfig, string) error {
		return func(fc *nodeagent.FileConfig, v string) error { *dst(fc) = v; return nil }
	}
	return []setting{
		{"nats-url", "FEDMESH_NATS_URL", nats.DefaultURL, "NATS server URL", func(fc *nodeagent.FileConfig, v string) error {
			fc.NATSURL = v
			return nil
		}},
		{"prefix", "FEDMESH_PREFIX", "", "subject prefix (default fed)", str(func(fc *nodeagent.FileConfig) *string { return &fc.Prefix })},
		{"node-id", "FEDMESH_NODE_ID", "", "node id ([A-Za-z0-9_-])", str(func(fc *nodeagent.FileConfig) *string { return &fc.NodeID })},
		{"region", "FEDMESH_REGION", "", "region id", str(func(fc *nodeagent.FileConfig) *string { return &fc.Region })},
		{"zone", "FEDMESH_ZONE", "", "zone id", str(func(fc *nodeagent.FileConfig) *string { return &fc.Zone })},
		{"clearance", "FEDMESH_CLEARANCE", "", "highest privacy level: public, internal, confidential, restricted", str(func(fc *nodeagent.FileConfig) *string { return &fc.Clearance })},
		{"cost", "FEDMESH_COST", "", "relative cost in [0,1] (default 0.5)", func(fc *nodeagent.FileConfig, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			fc.Cost = &f
			return err
		}},
		{"gpu", "FEDMESH_GPU", "", "the node has a GPU (true/false)", func(fc *nodeagent.FileConfig, v string) error {
			b, err := strconv.ParseBool(v)
			fc.GPU = b
			return err
		}},
		{"max-concurrency", "FEDMESH_MAX_CONCURRENCY", "", "requests in flight before answering busy (default 8)", func(fc *nodeagent.FileConfig, v string) error {
			n, err := strconv.Atoi(v)
			fc.MaxConcurrency = n
			return err
		}},
		{"models", "FEDMESH_MODELS", "", `served models, "model_id:cap,cap;model_id:cap" (replaces the file's models)`, func(fc *nodeagent.FileConfig, v string) error {
			ms, err := nodeagent.ParseModels(v)
			fc.Models = ms
			return err
		}},
		{"backend", "FEDMESH_BACKEND", "", "backend type: synthetic or openai", str(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.Type })},
		{"backend-url", "FEDMESH_BACKEND_URL", "", "OpenAI-compatible server URL (http://host:port[/v1])", str(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.URL })},
		{"api-key-env", "", "", "name of the env var holding the backend API key (default FEDMESH_BACKEND_API_KEY)", str(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.APIKeyEnv })},
		{"heartbeat-interval", "FEDMESH_HEARTBEAT_INTERVAL", "", "heartbeat period (default 1s)", dur(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.HeartbeatInterval })},
		{"drain-timeout", "FEDMESH_DRAIN_TIMEOUT", "", "grace period for requests in flight on SIGTERM (default 30s)", dur(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.DrainTimeout })},
		{"log-format", "FEDMESH_LOG_FORMAT", "console", "console or json", func(_ *nodeagent.FileConfig, v string) error { o.logFormat = v; return nil }},
		{"log-level", "FEDMESH_LOG_LEVEL", "info", "debug, info, warn, error", func(_ *nodeagent.FileConfig, v string) error { o.logLevel = v; return nil }},
	}
}

// load merges file, environment and flags into the node's config.
func load(args []string, lookup func(string) (string, bool), stderr io.Writer) (nodeagent.Config, runOptions, error) {
	o := runOptions{natsURL: nats.DefaultURL, logFormat: "console", logLevel: "info"}
	fs := flag.NewFlagSet("nodeagent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (env FEDMESH_NODE_CONFIG)")
	all := settings(&o)
	vals := make(map[string]*string, len(all))
	for _, s := range all {
		usage := s.usage
		if s.env != "" {
			usage += " (env " + s.env + ")"
		}
		vals[s.flag] = fs.String(s.flag, s.def, usage)
	}
	if err := fs.Parse(args); err != nil {
		return nodeagent.Config{}, o, err
	}
	if fs.NArg() > 0 {
		return nodeagent.Config{}, o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	path := *cfgPath
	if v, ok := lookup("FEDMESH_NODE_CONFIG"); ok && !set["config"] {
		path = v
	}
	var fc nodeagent.FileConfig
	if path != "" {
		var err error
		if fc, err = nodeagent.LoadFile(path); err != nil {
			return nodeagent.Config{}, o, err
		}
	}
	if fc.NATSURL != "" {
		o.natsURL = fc.NATSURL
	}
	for _, s := range all {
		v, from := "", ""
		if ev, ok := lookup(s.env); ok && s.env != "" {
			v, from = ev, "env "+s.env
		}
		if set[s.flag] {
			v, from = *vals[s.flag], "--"+s.flag
		}
		if from == "" {
			continue
		}
		if err := s.apply(&fc, v); err != nil {
			return nodeagent.Config{}, o, fmt.Errorf("%s %q: %w", from, v, err)
		}
	}
	if fc.NATSURL != "" {
		o.natsURL = fc.NATSURL
	}
	cfg, err := fc.Config(lookup)
	if err != nil {
		return nodeagent.Config{}, o, fmt.Errorf("invalid node config: %w", err)
	}
	return cfg, o, nil
}

func run(args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	cfg, o, err := load(args, lookup, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nodeagent:", err)
		return 2
	}
	log := logging.Component(logging.New(stderr, o.logFormat, o.logLevel), "nodeagent")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(o.natsURL, nats.Name("fedmesh-nodeagent-"+cfg.NodeID), nats.MaxReconnects(-1))
	if err != nil {
		log.Error().Err(err).Str("url", o.natsURL).Msg("connect to NATS")
		return 1
	}
	defer nc.Close()
	svc, err := nodeagent.New(nc, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("invalid config")
		return 2
	}
	if err := svc.Start(ctx); err != nil {
		if ctx.Err() != nil {
			log.Info().Msg("stopped before registration")
			return 0
		}
		log.Error().Err(err).Msg("start")
		return 1
	}
	<-ctx.Done()
	stop() // a second signal kills the process the default way
	log.Info().Dur("drain_timeout", cfg.DrainTimeout).Msg("signal received: draining")
	if err := svc.Stop(); err != nil {
		log.Warn().Err(err).Msg("stop")
	}
	return 0
}
