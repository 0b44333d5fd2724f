package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
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
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	o := options{cfg: gateway.DefaultConfig()}
	_, err := servicecmd.Parse(o.command(), []string{"--addr", "127.0.0.1:0"}, lookup, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "/etc/fedmesh/keys.yaml", o.keysFile)
	assert.Equal(t, "sk-env=envy", o.keys)
	assert.Equal(t, "127.0.0.1:0", o.cfg.Addr, "a flag wins over its variable")
	assert.Equal(t, 10*time.Second, o.cfg.Timeout)
}
