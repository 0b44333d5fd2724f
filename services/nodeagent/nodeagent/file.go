package nodeagent

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Backend types of FileBackend.Type.
const (
	BackendSynthetic = "synthetic"
	BackendOpenAI    = "openai"
)

// FileConfig is the YAML configuration file (see README). Unknown fields are
// errors, so a typo fails at start instead of being ignored.
type FileConfig struct {
	NATSURL           string        `yaml:"nats_url"`
	Prefix            string        `yaml:"prefix"`
	NodeID            string        `yaml:"node_id"`
	Region            string        `yaml:"region"`
	Zone              string        `yaml:"zone"`
	Clearance         string        `yaml:"clearance"`
	Cost              *float64      `yaml:"cost"`
	GPU               bool          `yaml:"gpu"`
	MaxConcurrency    int           `yaml:"max_concurrency"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	DrainTimeout      time.Duration `yaml:"drain_timeout"`
	// The replay buffer (fed.node.<id>.replay); 0 → the Default*.
	ReplayChunks  int           `yaml:"replay_chunks"`
	ReplayBytes   int           `yaml:"replay_bytes"`
	ReplayStreams int           `yaml:"replay_streams"`
	ReplayKeep    time.Duration `yaml:"replay_keep"`
	// MaxBlobBytes caps out-of-band bodies and answers; 0 → 64 MiB.
	MaxBlobBytes int64 `yaml:"max_blob_bytes"`
	// OutcomeWindow batches completed outcomes; 0 (default) → each at once.
	OutcomeWindow time.Duration     `yaml:"outcome_window"`
	Labels        map[string]string `yaml:"labels"`
	Backend       FileBackend       `yaml:"backend"`
	Models        []FileModel       `yaml:"models"`
}

// FileBackend configures the node's model server.
type FileBackend struct {
	Type         string        `yaml:"type"` // synthetic (default) or openai
	URL          string        `yaml:"url"`
	APIKeyEnv    string        `yaml:"api_key_env"` // name of the env var holding the key
	StallTimeout time.Duration `yaml:"stall_timeout"`
	Completions  bool          `yaml:"completions"`
	Voice        string        `yaml:"voice"`
	// Continue: the server continues a given answer (vLLM, SGLang:
	// continue_final_message), so the node takes continuations of lost
	// streams.
	Continue bool `yaml:"continue"`
	// MetricsURL is the server's Prometheus endpoint, scraped for its
	// load; unset → DefaultMetricsURL(url) for openai, none for synthetic;
	// "" or "off" → none. Metrics picks the names (vllm, sglang,
	// llamacpp, tgi), MetricsInterval the period (0 → 250ms).
	MetricsURL      *string       `yaml:"metrics_url"`
	Metrics         string        `yaml:"metrics"`
	MetricsInterval time.Duration `yaml:"metrics_interval"`
	// Warmup: one short request per text model at start, measured and
	// published as a probe outcome (Config.Warmup); unset → on for openai,
	// off for synthetic.
	Warmup *bool `yaml:"warmup"`
	// Synthetic backend knobs.
	TTFT        time.Duration `yaml:"ttft"`
	TokenDelay  time.Duration `yaml:"token_delay"`
	Tokens      int           `yaml:"tokens"`
	TokensMax   int           `yaml:"tokens_max"` // > tokens: length per request in [tokens, tokens_max]
	FailureRate float64       `yaml:"failure_rate"`
	TokenBytes  int           `yaml:"token_bytes"`
}

// FileModel is one served model.
type FileModel struct {
	ModelID      string   `yaml:"model_id"`
	Name         string   `yaml:"name"`
	Version      string   `yaml:"version"`
	Capabilities []string `yaml:"capabilities"`
	Parameters   string   `yaml:"parameters"`
	Quantization string   `yaml:"quantization"`
	// Upstream is the model's name on the backend server when it differs
	// from model_id (e.g. "meta-llama/Meta-Llama-3-8B-Instruct").
	Upstream string `yaml:"upstream"`
}

// maxFileBytes bounds a config file.
const maxFileBytes = 1 << 20

// LoadFile reads and checks a YAML config file.
func LoadFile(path string) (FileConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return FileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	fc, err := ParseFile(data)
	if err != nil {
		return FileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	return fc, nil
}

// ParseFile decodes a YAML config document strictly and checks it; errors
// name the field.
func ParseFile(data []byte) (FileConfig, error) {
	var fc FileConfig
	if len(data) > maxFileBytes {
		return fc, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return FileConfig{}, fmt.Errorf("yaml: %s", strings.Join(namedErrors(data, te.Errors), "; "))
		}
		return FileConfig{}, fmt.Errorf("yaml: %w", err)
	}
	return fc, fc.Check()
}

// namedErrors prefixes yaml's "line N: …" errors with the path of the field
// on that line, since yaml.v3 names only the line.
func namedErrors(data []byte, errs []string) []string {
	var root yaml.Node
	paths := map[int]string{}
	if yaml.Unmarshal(data, &root) == nil {
		walkPaths(&root, "", paths)
	}
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e
		var line int
		if _, err := fmt.Sscanf(e, "line %d:", &line); err == nil && paths[line] != "" {
			out[i] = paths[line] + ": " + e
		}
	}
	return out
}

func walkPaths(n *yaml.Node, path string, paths map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkPaths(c, path, paths)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			if _, ok := paths[n.Content[i].Line]; !ok {
				paths[n.Content[i].Line] = p
			}
			walkPaths(n.Content[i+1], p, paths)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			walkPaths(c, fmt.Sprintf("%s[%d]", path, i), paths)
		}
	case yaml.ScalarNode:
		if _, ok := paths[n.Line]; !ok && path != "" {
			paths[n.Line] = path
		}
	}
}

// Check validates the fields that Config.Validate cannot see (names,
// backend settings). Fields left empty may still come from flags.
func (fc *FileConfig) Check() error {
	var errs []error
	if fc.Clearance != "" {
		if _, err := wire.ParsePrivacy(fc.Clearance); err != nil {
			errs = append(errs, fmt.Errorf("clearance: %w", err))
		}
	}
	if fc.Cost != nil && !(*fc.Cost >= 0 && *fc.Cost <= 1) { // NaN included
		errs = append(errs, fmt.Errorf("cost must be in [0,1], got %v", *fc.Cost))
	}
	if fc.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("max_concurrency must be >= 0, got %d", fc.MaxConcurrency))
	}
	errs = append(errs, checkDuration("heartbeat_interval", fc.HeartbeatInterval), checkDuration("drain_timeout", fc.DrainTimeout),
		checkDuration("replay_keep", fc.ReplayKeep), checkDuration("outcome_window", fc.OutcomeWindow))
	for _, n := range []struct {
		name string
		v    int
	}{{"replay_chunks", fc.ReplayChunks}, {"replay_bytes", fc.ReplayBytes}, {"replay_streams", fc.ReplayStreams}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s must be >= 0, got %d", n.name, n.v))
		}
	}
	if fc.MaxBlobBytes < 0 {
		errs = append(errs, fmt.Errorf("max_blob_bytes must be >= 0, got %d", fc.MaxBlobBytes))
	}
	b := &fc.Backend
	switch b.Type {
	case "", BackendSynthetic:
	case BackendOpenAI:
		if b.URL == "" {
			errs = append(errs, errors.New("backend.url is required for backend type openai"))
		}
	default:
		errs = append(errs, fmt.Errorf("backend.type %q is not synthetic or openai", b.Type))
	}
	if b.FailureRate < 0 || b.FailureRate > 1 || math.IsNaN(b.FailureRate) {
		errs = append(errs, fmt.Errorf("backend.failure_rate %v is outside [0,1]", b.FailureRate))
	}
	if b.Tokens < 0 || b.TokensMax < 0 || b.TokenBytes < 0 || b.TTFT < 0 || b.TokenDelay < 0 || b.StallTimeout < 0 {
		errs = append(errs, errors.New("backend: tokens, tokens_max, token_bytes, ttft, token_delay and stall_timeout must not be negative"))
	}
	if b.TokensMax > 0 && b.TokensMax < b.Tokens {
		errs = append(errs, fmt.Errorf("backend.tokens_max %d is below backend.tokens %d", b.TokensMax, b.Tokens))
	}
	// Only a metrics_url given here: the default one derives from
	// backend.url, which the backend checks.
	var givenMetricsURL string
	if b.MetricsURL != nil {
		givenMetricsURL = b.metricsURL()
	}
	errs = append(errs, checkServerMetrics(givenMetricsURL, b.Metrics, b.MetricsInterval))
	if strings.ContainsAny(b.APIKeyEnv, "= \t") {
		errs = append(errs, fmt.Errorf("backend.api_key_env %q is not an environment variable name", b.APIKeyEnv))
	}
	for i, m := range fc.Models {
		errs = append(errs, checkModel(i, m.ModelID, m.Capabilities))
	}
	return errors.Join(errs...)
}

// Config builds the agent's Config, with its backend; getenv reads the
// backend's API key (from backend.api_key_env, default
// FEDMESH_BACKEND_API_KEY). The result is validated.
func (fc *FileConfig) Config(getenv func(string) (string, bool)) (Config, error) {
	if err := fc.Check(); err != nil {
		return Config{}, err
	}
	c := DefaultConfig()
	c.Subjects.Prefix = fc.Prefix
	c.NodeID, c.Region, c.Zone, c.GPU, c.Labels = fc.NodeID, fc.Region, fc.Zone, fc.GPU, fc.Labels
	c.Clearance, _ = wire.ParsePrivacy(fc.Clearance)
	if fc.Cost != nil {
		c.Cost = *fc.Cost
	}
	if fc.MaxConcurrency > 0 {
		c.MaxConcurrency = fc.MaxConcurrency
	}
	if fc.HeartbeatInterval > 0 {
		c.HeartbeatInterval = fc.HeartbeatInterval
	}
	if fc.DrainTimeout > 0 {
		c.DrainTimeout = fc.DrainTimeout
	}
	c.ReplayChunks = cmp.Or(fc.ReplayChunks, c.ReplayChunks)
	c.ReplayBytes = cmp.Or(fc.ReplayBytes, c.ReplayBytes)
	c.ReplayStreams = cmp.Or(fc.ReplayStreams, c.ReplayStreams)
	c.ReplayKeep = cmp.Or(fc.ReplayKeep, c.ReplayKeep)
	c.MaxBlobBytes = cmp.Or(fc.MaxBlobBytes, c.MaxBlobBytes)
	c.OutcomeWindow = cmp.Or(fc.OutcomeWindow, c.OutcomeWindow)
	c.MetricsURL = fc.Backend.metricsURL()
	c.Metrics = cmp.Or(fc.Backend.Metrics, c.Metrics)
	c.MetricsInterval = cmp.Or(fc.Backend.MetricsInterval, c.MetricsInterval)
	c.Warmup = fc.Backend.warmup()
	names := map[string]string{}
	for _, m := range fc.Models {
		c.Models = append(c.Models, record.Model{ModelID: m.ModelID, Name: m.Name, Version: m.Version,
			Capabilities: m.Capabilities, Parameters: m.Parameters, Quantization: m.Quantization})
		if m.Upstream != "" {
			names[m.ModelID] = m.Upstream
		}
	}
	be, err := fc.Backend.build(names, getenv, c.MaxConcurrency)
	if err != nil {
		return Config{}, err
	}
	c.Backend = be
	if err := c.withDefaults().Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// metricsURL is the endpoint to scrape, "" for none: backend.metrics_url
// when set ("off" → none), else the openai server's default.
func (b *FileBackend) metricsURL() string {
	if b.MetricsURL != nil {
		if v := strings.TrimSpace(*b.MetricsURL); !strings.EqualFold(v, MetricsOff) {
			return v
		}
		return ""
	}
	if b.Type == BackendOpenAI {
		return DefaultMetricsURL(b.URL)
	}
	return ""
}

// warmup is backend.warmup when set, else on for openai servers (whose
// speed is measured, not configured) and off for synthetic.
func (b *FileBackend) warmup() bool {
	if b.Warmup != nil {
		return *b.Warmup
	}
	return b.Type == BackendOpenAI
}

// maxConcurrency sizes the OpenAI backend's connection pool: one kept-alive
// connection per request the node may have in flight.
func (b *FileBackend) build(names map[string]string, getenv func(string) (string, bool), maxConcurrency int) (backend.Backend, error) {
	if b.Type == BackendOpenAI {
		if getenv == nil {
			getenv = os.LookupEnv
		}
		be, err := openai.New(openai.Config{BaseURL: b.URL, APIKey: openai.APIKeyFromEnv(getenv, b.APIKeyEnv),
			ModelNames: names, Completions: b.Completions, StallTimeout: b.StallTimeout, Voice: b.Voice,
			MaxConns: maxConcurrency, Continue: b.Continue})
		if err != nil {
			return nil, fmt.Errorf("backend.url: %w", err)
		}
		return be, nil
	}
	return synthetic.New(synthetic.Config{TTFT: b.TTFT, TokenDelay: b.TokenDelay, Tokens: b.Tokens, TokensMax: b.TokensMax,
		FailureRate: b.FailureRate, TokenBytes: b.TokenBytes}), nil
}

// checkModel checks models[i] of a file: its id and capabilities.
func checkModel(i int, id string, capabilities []string) error {
	if err := wire.ValidateID("model_id", id); err != nil {
		return fmt.Errorf("models[%d]: %w", i, err)
	}
	if len(capabilities) == 0 {
		return fmt.Errorf("models[%d] (%s): capabilities must list at least one, got none", i, id)
	}
	for _, c := range capabilities {
		if err := wire.ValidateCapability(c); err != nil {
			return fmt.Errorf("models[%d] (%s): capabilities: %w", i, id, err)
		}
	}
	return nil
}

// ParseModels reads the --models flag: models separated by ';' or spaces,
// each "model_id:cap1,cap2" ("llama-3:generate,code;bge:embed").
func ParseModels(s string) ([]FileModel, error) {
	var out []FileModel
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == ' ' || r == '\n' }) {
		id, caps, ok := strings.Cut(part, ":")
		if !ok || caps == "" {
			return nil, fmt.Errorf("models: %q is not model_id:capability[,capability…]", part)
		}
		m := FileModel{ModelID: id}
		for _, c := range strings.Split(caps, ",") {
			if c = strings.TrimSpace(c); c != "" {
				m.Capabilities = append(m.Capabilities, c)
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("models: empty")
	}
	probe := FileConfig{Models: out}
	if err := probe.Check(); err != nil {
		return nil, err
	}
	return out, nil
}
