package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, doc string) string {
	p := filepath.Join(t.TempDir(), "node.yaml")
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
	return p
}

// load parses and loads as run does before it connects; it returns the
// node's config and the NATS URL run connects to.
func load(args []string, lookup func(string) (string, bool), stderr io.Writer) (nodeagent.Config, string, error) {
	a := newAgent(lookup)
	common, err := servicecmd.Parse(a.command(), args, lookup, stderr)
	if err != nil {
		return nodeagent.Config{}, "", err
	}
	return a.cfg, common.NatsURL, nil
}

func TestLoadLayersFileEnvFlags(t *testing.T) {
	path := writeFile(t, "node_id: from-file\nregion: file-region\ncost: 0.1\nmax_concurrency: 3\nmodels: [{model_id: m1, capabilities: [generate]}]\n")
	cfg, natsURL, err := load([]string{"--config", path, "--region", "flag-region", "--models", "a:generate,code;b:embed", "--gpu=true"},
		env(map[string]string{"FEDMESH_REGION": "env-region", "FEDMESH_COST": "0.7", "FEDMESH_NATS_URL": "nats://127.0.0.1:1"}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "from-file", cfg.NodeID)
	assert.Equal(t, "flag-region", cfg.Region, "flag beats env beats file")
	assert.InDelta(t, 0.7, cfg.Cost, 1e-9, "env beats file")
	assert.Equal(t, 3, cfg.MaxConcurrency)
	assert.True(t, cfg.GPU)
	require.Len(t, cfg.Models, 2)
	assert.Equal(t, []string{"generate", "code"}, cfg.Models[0].Capabilities)
	assert.Equal(t, "nats://127.0.0.1:1", natsURL)
	assert.Equal(t, "synthetic", cfg.Backend.Name())
}

// The file's nats_url beats the default, and loses to the variable and the
// flag; the config file may also come from FEDMESH_CONFIG or the older
// FEDMESH_NODE_CONFIG.
func TestNatsURLAndConfigFilePrecedence(t *testing.T) {
	path := writeFile(t, "nats_url: nats://file:1\nnode_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"file beats default", []string{"--config", path}, nil, "nats://file:1"},
		{"env beats file", []string{"--config", path}, map[string]string{"FEDMESH_NATS_URL": "nats://env:1"}, "nats://env:1"},
		{"flag beats env", []string{"--config", path, "--nats-url", "nats://flag:1"}, map[string]string{"FEDMESH_NATS_URL": "nats://env:1"}, "nats://flag:1"},
		{"FEDMESH_CONFIG", nil, map[string]string{"FEDMESH_CONFIG": path}, "nats://file:1"},
		{"FEDMESH_NODE_CONFIG", nil, map[string]string{"FEDMESH_NODE_CONFIG": path}, "nats://file:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, natsURL, err := load(tc.args, env(tc.env), io.Discard)
			require.NoError(t, err)
			assert.Equal(t, "n1", cfg.NodeID)
			assert.Equal(t, tc.want, natsURL, "what servicecmd.Run connects to")
		})
	}
}

// The model server's metrics: openai's default URL, overridden or turned
// off by the file, the environment or a flag.
func TestBackendMetricsSettings(t *testing.T) {
	path := writeFile(t, "node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"+
		"backend: {type: openai, url: 'http://127.0.0.1:8000/v1', metrics: sglang}\n")
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		url      string
		metrics  string
		interval time.Duration
	}{
		{"file and defaults", []string{"--config", path}, nil, "http://127.0.0.1:8000/metrics", "sglang", nodeagent.DefaultMetricsInterval},
		{"env off", []string{"--config", path}, map[string]string{"FEDMESH_BACKEND_METRICS_URL": "off"}, "", "sglang", nodeagent.DefaultMetricsInterval},
		{"flags", []string{"--config", path, "--backend-metrics-url", "http://h:9/metrics", "--backend-metrics", "tgi", "--backend-metrics-interval", "1s"},
			nil, "http://h:9/metrics", "tgi", time.Second},
		{"synthetic", []string{"--node-id", "n1", "--region", "r1", "--models", "m:generate"}, nil, "", "vllm", nodeagent.DefaultMetricsInterval},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := load(tc.args, env(tc.env), io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tc.url, cfg.MetricsURL)
			assert.Equal(t, tc.metrics, cfg.Metrics)
			assert.Equal(t, tc.interval, cfg.MetricsInterval)
		})
	}
}

// The warm-up: on for openai by default, off for synthetic, set by the
// file, the environment or a flag.
func TestBackendWarmupSetting(t *testing.T) {
	path := writeFile(t, "node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"+
		"backend: {type: openai, url: 'http://127.0.0.1:8000/v1'}\n")
	synthetic := []string{"--node-id", "n1", "--region", "r1", "--models", "m:generate"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"openai default", []string{"--config", path}, nil, true},
		{"env off", []string{"--config", path}, map[string]string{"FEDMESH_BACKEND_WARMUP": "false"}, false},
		{"flag off", []string{"--config", path, "--backend-warmup", "false"}, nil, false},
		{"synthetic default", synthetic, nil, false},
		{"synthetic flag on", append(synthetic, "--backend-warmup", "true"), nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := load(tc.args, env(tc.env), io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.Warmup)
		})
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	base := []string{"--node-id", "n1", "--region", "r1", "--models", "m:generate"}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		says string
	}{
		{"bad node id", []string{"--node-id", "a.b", "--region", "r1", "--models", "m:generate"}, nil, "node_id"},
		{"missing region", []string{"--node-id", "n1", "--models", "m:generate"}, nil, "region"},
		{"bad cost flag", append(base, "--cost", "cheap"), nil, "--cost"},
		{"bad env", base, map[string]string{"FEDMESH_MAX_CONCURRENCY": "lots"}, "FEDMESH_MAX_CONCURRENCY"},
		{"bad models", []string{"--node-id", "n1", "--region", "r1", "--models", "m:chat"}, nil, "capabilities"},
		{"openai without url", append(base, "--backend", "openai"), nil, "backend.url"},
		{"bad clearance", append(base, "--clearance", "top"), nil, "clearance"},
		{"bad metrics names", append(base, "--backend-metrics", "triton"), nil, "backend.metrics"},
		{"bad metrics interval", append(base, "--backend-metrics-interval", "1ms"), nil, "backend.metrics_interval"},
		{"bad warm-up flag", append(base, "--backend-warmup", "sometimes"), nil, "--backend-warmup"},
		{"bad file", []string{"--config", "/nonexistent/node.yaml"}, nil, "node.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), tc.args, env(tc.env), &out)
			assert.Equal(t, 2, code)
			assert.Contains(t, out.String(), tc.says)
		})
	}
}

// The process registers, and on SIGTERM drains, deregisters and exits 0.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	var mu sync.Mutex
	var registered, deregistered []string
	svc, err := micro.AddService(nc, micro.Config{Name: subject.ServiceCatalog, Version: "0.0.1"})
	require.NoError(t, err)
	defer svc.Stop()
	require.NoError(t, svc.AddEndpoint("register", micro.HandlerFunc(func(r micro.Request) {
		var n api.RegisterRequest
		_ = json.Unmarshal(r.Data(), &n)
		mu.Lock()
		registered = append(registered, n.NodeID)
		mu.Unlock()
		_ = r.RespondJSON(api.RegisterResponse{NodeID: n.NodeID})
	}), micro.WithEndpointSubject(subject.Default.CatalogRegisterBound())))
	require.NoError(t, svc.AddEndpoint("deregister", micro.HandlerFunc(func(r micro.Request) {
		var d api.DeregisterRequest
		_ = json.Unmarshal(r.Data(), &d)
		mu.Lock()
		deregistered = append(deregistered, d.NodeID)
		mu.Unlock()
		_ = r.Respond([]byte("{}"))
	}), micro.WithEndpointSubject(subject.Default.CatalogDeregisterBound())))

	done := make(chan int, 1)
	logs, _ := natsembed.NewLogBuffer(t)
	go func() {
		done <- run(context.Background(), []string{"--nats-url", s.ClientURL(), "--node-id", "cli-1", "--region", "r1", "--models", "m:generate",
			"--heartbeat-interval", "50ms", "--drain-timeout", "2s", "--log-format", "json"}, env(nil), logs)
	}()
	natsembed.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		return natsembed.Check(len(registered) == 1, "registrations: %v", registered)
	})
	// It serves.
	m := nats.NewMsg(subject.Default.NodeInferAt("cli-1", "internal"))
	m.Header.Set(wire.HdrRequestID, "r1")
	m.Header.Set(wire.HdrReplyTo, nats.NewInbox())
	ack, err := nc.RequestMsg(m, 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, wire.StatusAccepted, ack.Header.Get(wire.HdrStatus))

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(5 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"cli-1"}, deregistered)
}
