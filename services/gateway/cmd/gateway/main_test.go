package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
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
