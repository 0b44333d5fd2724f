package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestNewValidatesConfig(t *testing.T) {
	nc := &nats.Conn{}
	cases := []struct {
		name   string
		mutate func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"zero config", func(c *Config) { *c = Config{} }, true},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, false},
		{"bad tenant privacy", func(c *Config) { c.Keys = map[string]Tenant{"k": {ID: "t", Privacy: "nope"}} }, false},
		{"empty tenant", func(c *Config) { c.Keys = map[string]Tenant{"k": {}} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			_, err := New(nc, cfg, natsembed.Logger(t))
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
	_, err := New(nil, DefaultConfig(), natsembed.Logger(t))
	assert.Error(t, err)
	assert.Equal(t, "127.0.0.1:8080", DefaultConfig().Addr)
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		field  string // "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero means default", func(c *Config) { *c = Config{} }, ""},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout"},
		{"timeout over the mesh's bound", func(c *Config) { c.Timeout = wire.MaxTimeout + time.Second }, "timeout"},
		{"negative catalog timeout", func(c *Config) { c.CatalogTimeout = -1 }, "catalog_timeout"},
		{"negative max body", func(c *Config) { c.MaxBodyBytes = -1 }, "max_body_bytes"},
		{"negative shutdown grace", func(c *Config) { c.ShutdownGrace = -time.Second }, "shutdown_grace"},
		{"invalid tenant", func(c *Config) { c.Keys = map[string]Tenant{"sk-bad-key": {ID: "t", Burst: -1}} }, "keys: key sk-b…"},
		{"tenant too long", func(c *Config) { c.Keys = map[string]Tenant{"k": {ID: strings.Repeat("t", wire.MaxTenantLen+1)}} }, "keys"},
		{"negative read header timeout", func(c *Config) { c.ReadHeaderTimeout = -1 }, "read_header_timeout"},
		{"negative read timeout", func(c *Config) { c.ReadTimeout = -1 }, "read_timeout"},
		{"negative write timeout", func(c *Config) { c.WriteTimeout = -1 }, "write_timeout"},
		{"negative idle timeout", func(c *Config) { c.IdleTimeout = -1 }, "idle_timeout"},
		{"negative max header bytes", func(c *Config) { c.MaxHeaderBytes = -1 }, "max_header_bytes"},
		{"negative max concurrent", func(c *Config) { c.MaxConcurrent = -1 }, "max_concurrent"},
		{"negative tenant max concurrent", func(c *Config) { c.Keys = map[string]Tenant{"sk-neg-1": {ID: "t", MaxConcurrent: -1}} }, "keys: key sk-n…"},
		{"a tenant's keys agree on the cap", func(c *Config) {
			c.Keys = map[string]Tenant{"sk-one-1": {ID: "t", MaxConcurrent: 8}, "sk-two-2": {ID: "t", MaxConcurrent: 8}}
		}, ""},
		{"an explicit cap equal to the default agrees with none", func(c *Config) {
			c.Keys = map[string]Tenant{"sk-one-1": {ID: "t", MaxConcurrent: DefaultMaxConcurrent}, "sk-two-2": {ID: "t"}}
		}, ""},
		{"a tenant's keys disagree on the cap", func(c *Config) {
			c.Keys = map[string]Tenant{"sk-one-1": {ID: "t", MaxConcurrent: 8}, "sk-two-2": {ID: "t"}}
		}, "keys: key sk-t…: tenant t: max_concurrent 64, but key sk-o… has 8"},
		{"other tenants may differ", func(c *Config) {
			c.Keys = map[string]Tenant{"sk-one-1": {ID: "t", MaxConcurrent: 8}, "sk-two-2": {ID: "u"}}
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.field == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "gateway config: "+tc.field)
		})
	}
	assert.Equal(t, DefaultConfig(), Config{}.withDefaults(), "a zero config is the default one")
}
