// Command nodeagent runs one fedmesh node: it registers the node's models
// with the catalog, serves dispatches with a backend (an OpenAI-compatible
// model server, or the synthetic stand-in) and drains on SIGTERM.
//
// Settings come from a YAML file (--config), then environment variables
// (FEDMESH_<FLAG>), then flags, each overriding the one before.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	servicecmd.Main(newAgent(os.LookupEnv).command())
}

// legacyConfigEnv is the config file's variable from before FEDMESH_CONFIG
// (the generic name of --config); still read when neither is given.
const legacyConfigEnv = "FEDMESH_NODE_CONFIG"

// run is main without the exit: 0 after a clean stop (or a signal before
// the node registered), 2 for bad settings, 1 for any other failure.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	return servicecmd.ExitCode(servicecmd.Run(ctx, newAgent(lookup).command(), args, lookup, stderr))
}

// agent is the command's state: the flags, and the config load builds
// from them and the file.
type agent struct {
	lookup     func(string) (string, bool)
	configPath string
	values     map[string]*string // the node's own flags, by name
	cfg        nodeagent.Config
}

func newAgent(lookup func(string) (string, bool)) *agent { return &agent{lookup: lookup} }

func (a *agent) command() servicecmd.Command {
	return servicecmd.Command{
		Name:    "nodeagent",
		Flags:   a.register,
		Prepare: a.load,
		ID:      func() string { return a.cfg.NodeID },
		Build: func(env servicecmd.Env) (servicecmd.Service, error) {
			return nodeagent.New(env.NC, a.cfg, env.Log)
		},
	}
}

// register adds --config and the node's flags. They are strings with no
// default, so a flag nobody set leaves the file's value alone.
func (a *agent) register(fs *flag.FlagSet) {
	fs.StringVar(&a.configPath, "config", "", "YAML config file (also "+legacyConfigEnv+")")
	a.values = make(map[string]*string, len(settings))
	for _, s := range settings {
		a.values[s.flag] = fs.String(s.flag, "", s.usage)
	}
}

// load builds the node's config before anything connects: the YAML file,
// overlaid with every flag set by the environment or the arguments. The
// file's nats_url is used when neither the variable nor the flag gave one.
func (a *agent) load(common *servicecmd.Common, given func(string) bool) error {
	path := a.configPath
	if v, ok := a.lookup(legacyConfigEnv); ok && !given("config") {
		path = v
	}
	var fc nodeagent.FileConfig
	if path != "" {
		var err error
		if fc, err = nodeagent.LoadFile(path); err != nil {
			return err
		}
	}
	if given("nats-url") {
		fc.NATSURL = common.NatsURL
	}
	if given("prefix") {
		fc.Prefix = common.Prefix
	}
	for _, s := range settings {
		if !given(s.flag) {
			continue
		}
		v := *a.values[s.flag]
		if err := s.apply(&fc, v); err != nil {
			// servicecmd merged the variable into the flag: name both.
			return fmt.Errorf("--%s (env %s) %q: %w", s.flag, servicecmd.EnvName(s.flag), v, err)
		}
	}
	cfg, err := fc.Config(a.lookup)
	if err != nil {
		return fmt.Errorf("invalid node config: %w", err)
	}
	a.cfg = cfg
	if fc.NATSURL != "" {
		common.NatsURL = fc.NATSURL
	}
	return nil
}

// setting is one of the node's flags and how it overlays the file.
type setting struct {
	flag, usage string
	apply       func(fc *nodeagent.FileConfig, v string) error
}

func text(dst func(fc *nodeagent.FileConfig) *string) func(*nodeagent.FileConfig, string) error {
	return func(fc *nodeagent.FileConfig, v string) error { *dst(fc) = v; return nil }
}

func duration(dst func(fc *nodeagent.FileConfig) *time.Duration) func(*nodeagent.FileConfig, string) error {
	return func(fc *nodeagent.FileConfig, v string) error {
		d, err := time.ParseDuration(v)
		*dst(fc) = d
		return err
	}
}

func integer(dst func(fc *nodeagent.FileConfig) *int) func(*nodeagent.FileConfig, string) error {
	return func(fc *nodeagent.FileConfig, v string) error {
		n, err := strconv.Atoi(v)
		*dst(fc) = n
		return err
	}
}

var settings = []setting{
	{"node-id", "node id ([A-Za-z0-9_-])", text(func(fc *nodeagent.FileConfig) *string { return &fc.NodeID })},
	{"region", "region id", text(func(fc *nodeagent.FileConfig) *string { return &fc.Region })},
	{"zone", "zone id", text(func(fc *nodeagent.FileConfig) *string { return &fc.Zone })},
	{"clearance", "highest privacy level: public, internal, confidential, restricted", text(func(fc *nodeagent.FileConfig) *string { return &fc.Clearance })},
	{"cost", "relative cost in [0,1] (default 0.5)", func(fc *nodeagent.FileConfig, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		fc.Cost = &f
		return err
	}},
	{"gpu", "the node has a GPU (true/false)", func(fc *nodeagent.FileConfig, v string) error {
		b, err := strconv.ParseBool(v)
		fc.GPU = b
		return err
	}},
	{"max-concurrency", "requests in flight before answering busy (default 8)", func(fc *nodeagent.FileConfig, v string) error {
		n, err := strconv.Atoi(v)
		fc.MaxConcurrency = n
		return err
	}},
	{"models", `served models, "model_id:cap,cap;model_id:cap" (replaces the file's models)`, func(fc *nodeagent.FileConfig, v string) error {
		ms, err := nodeagent.ParseModels(v)
		fc.Models = ms
		return err
	}},
	{"backend", "backend type: synthetic or openai", text(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.Type })},
	{"backend-url", "OpenAI-compatible server URL (http://host:port[/v1])", text(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.URL })},
	{"backend-metrics-url", `the model server's Prometheus endpoint, scraped for its load (default for openai: the backend URL without /v1, plus /metrics; "" or off: none)`, func(fc *nodeagent.FileConfig, v string) error {
		fc.Backend.MetricsURL = &v
		return nil
	}},
	{"backend-metrics", "the model server's metric names: vllm (default), sglang, llamacpp, tgi", text(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.Metrics })},
	{"backend-metrics-interval", "scrape period of the model server's metrics, 50ms to 5s (default 250ms)", duration(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.Backend.MetricsInterval })},
	{"backend-warmup", "time one short request per text model before joining (true/false; default true for openai, false for synthetic)", func(fc *nodeagent.FileConfig, v string) error {
		b, err := strconv.ParseBool(v)
		fc.Backend.Warmup = &b
		return err
	}},
	{"api-key-env", "name of the env var holding the backend API key (default FEDMESH_BACKEND_API_KEY)", text(func(fc *nodeagent.FileConfig) *string { return &fc.Backend.APIKeyEnv })},
	{"heartbeat-interval", "heartbeat period (default 1s)", duration(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.HeartbeatInterval })},
	{"drain-timeout", "grace period for requests in flight on SIGTERM (default 30s)", duration(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.DrainTimeout })},
	{"replay-chunks", "messages kept per stream for replay (default 4096)", integer(func(fc *nodeagent.FileConfig) *int { return &fc.ReplayChunks })},
	{"replay-bytes", "bytes kept per stream for replay (default 4194304)", integer(func(fc *nodeagent.FileConfig) *int { return &fc.ReplayBytes })},
	{"replay-streams", "finished streams kept for replay (default 256)", integer(func(fc *nodeagent.FileConfig) *int { return &fc.ReplayStreams })},
	{"replay-keep", "how long a finished stream is kept for replay (default 30s)", duration(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.ReplayKeep })},
	{"outcome-window", "batch completed outcomes in windows of this length (default 0: each at once)", duration(func(fc *nodeagent.FileConfig) *time.Duration { return &fc.OutcomeWindow })},
}
