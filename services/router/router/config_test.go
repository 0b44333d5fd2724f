package router

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		tune func(*Config)
		want string // "" valid, else the error names this field
	}{
		{"zero means defaults", func(c *Config) { *c = Config{} }, ""},
		{"defaults", nil, ""},
		{"bad region", func(c *Config) { c.Region = "eu west" }, "region"},
		{"bad policy", func(c *Config) { c.Policy.Strategy = "fastest" }, "policy"},
		{"negative max_in_flight", func(c *Config) { c.MaxInFlight = -1 }, "max_in_flight"},
		{"negative outstanding_ttl", func(c *Config) { c.OutstandingTTL = -time.Second }, "outstanding_ttl"},
		{"negative sweep_interval", func(c *Config) { c.SweepInterval = -time.Second }, "sweep_interval"},
		{"negative stop_timeout", func(c *Config) { c.StopTimeout = -time.Second }, "stop_timeout"},
		{"negative max_queue", func(c *Config) { c.MaxQueue = -1 }, "max_queue"},
		{"negative max_queue_ms", func(c *Config) { c.Policy.MaxQueueMs = -1 }, "policy: max_queue_ms"},
		{"max_queue_ms over 1 h", func(c *Config) { c.Policy.MaxQueueMs = 3600001 }, "policy: max_queue_ms"},
		{"negative lost_silence", func(c *Config) { c.LostSilence = -time.Second }, "lost_silence"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if c.tune != nil {
				c.tune(&cfg)
			}
			err := cfg.Validate()
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "router config: "+c.want)
		})
	}
}

func TestConfigZeroIsDefault(t *testing.T) {
	assert.Equal(t, DefaultConfig(), Config{}.withDefaults())
	assert.Equal(t, record.DefaultPolicy(), Config{}.withDefaults().Policy)
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	_, err := New(&nats.Conn{}, Config{StopTimeout: -time.Second}, natsembed.Logger(t))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stop_timeout")
}
