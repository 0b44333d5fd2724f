package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func TestLoadKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(file, []byte("keys:\n  - key: sk-file\n    tenant: filed\n"), 0o600))
	cases := []struct {
		name, path, env string
		want            map[string]gateway.Tenant
		err             bool
	}{
		{"none", "", "", map[string]gateway.Tenant{}, false},
		{"file", file, "", map[string]gateway.Tenant{"sk-file": {ID: "filed"}}, false},
		{"file and env", file, "sk-env=envy", map[string]gateway.Tenant{"sk-file": {ID: "filed"}, "sk-env": {ID: "envy"}}, false},
		{"env repeats file key", file, "sk-file=other", nil, true},
		{"missing file", filepath.Join(t.TempDir(), "nope"), "", nil, true},
		{"bad env", "", "garbage", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadKeys(tc.path, tc.env)
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFlagsAndEnv(t *testing.T) {
	env := map[string]string{
		"FEDMESH_API_KEYS_FILE": "/etc/fedmesh/keys.yaml",
		"FEDMESH_API_KEYS":      "sk-env=envy",
		"FEDMESH_ADDR":          "0.0.0.0:9000",
		"FEDMESH_TIMEOUT":       "10s",

		"FEDMESH_READ_HEADER_TIMEOUT": "2s",
		"FEDMESH_READ_TIMEOUT":        "20s",
		"FEDMESH_WRITE_TIMEOUT":       "7s",
		"FEDMESH_IDLE_TIMEOUT":        "9s",
		"FEDMESH_MAX_HEADER_BYTES":    "8192",
		"FEDMESH_MAX_BODY_BYTES":      "1048576",
		"FEDMESH_MAX_CONCURRENT":      "16",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	o := options{cfg: gateway.DefaultConfig()}
	_, err := servicecmd.Parse(o.command(), []string{"--addr", "127.0.0.1:0"}, lookup, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "/etc/fedmesh/keys.yaml", o.keysFile)
	assert.Equal(t, "sk-env=envy", o.keys)
	assert.Equal(t, "127.0.0.1:0", o.cfg.Addr, "a flag wins over its variable")
	assert.Equal(t, 10*time.Second, o.cfg.Timeout)
	assert.Equal(t, 2*time.Second, o.cfg.ReadHeaderTimeout)
	assert.Equal(t, 20*time.Second, o.cfg.ReadTimeout)
	assert.Equal(t, 7*time.Second, o.cfg.WriteTimeout)
	assert.Equal(t, 9*time.Second, o.cfg.IdleTimeout)
	assert.Equal(t, 8192, o.cfg.MaxHeaderBytes)
	assert.EqualValues(t, 1<<20, o.cfg.MaxBodyBytes)
	assert.Equal(t, 16, o.cfg.MaxConcurrent)

	// unset, they are the defaults
	o = options{cfg: gateway.DefaultConfig()}
	_, err = servicecmd.Parse(o.command(), nil, func(string) (string, bool) { return "", false }, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, gateway.DefaultConfig(), o.cfg)
}

// A password in --nats-url never reaches the gateway's logs, however its
// requests fail.
func TestNATSPasswordNotLogged(t *testing.T) {
	const password = "s3cret-Pa55"
	srv := natsembed.StartForTest(t) // no auth configured: any credentials are accepted
	u, err := url.Parse(srv.ClientURL())
	require.NoError(t, err)
	u.User = url.UserPassword("gw", password)
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		o := options{cfg: gateway.DefaultConfig()}
		done <- servicecmd.Run(ctx, o.command(), []string{"--nats-url", u.String() + ",nats://gw:" + password + "@127.0.0.1:1",
			"--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug", "--api-keys", "sk-test=t"},
			func(string) (string, bool) { return "", false }, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		assert.NotContains(t, logs.String(), password)
		assert.Contains(t, logs.String(), "gw:redacted@", "the URL is logged, redacted")
	})
	var addr string
	natsembed.Eventually(t, 0, func() error {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["message"] == "gateway listening" {
				addr, _ = m["addr"].(string)
			}
		}
		return natsembed.Check(addr != "" && strings.Contains(logs.String(), `"started"`), "gateway not started: %s", logs.String())
	})
	// no router, no catalog: both fail, and are logged with their detail
	for _, path := range []string{"/v1/chat/completions", "/v1/models"} {
		req, err := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(`{"model":"m"}`))
		require.NoError(t, err)
		if path == "/v1/models" {
			req.Method = "GET"
		}
		req.Header.Set("Authorization", "Bearer sk-test")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, path)
	}
	natsembed.Eventually(t, 0, func() error {
		return natsembed.Check(strings.Count(logs.String(), `"message":"request"`) == 2, "access log lines missing")
	})
}

// syncBuffer is a bytes.Buffer the command's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
