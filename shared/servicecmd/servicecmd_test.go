package servicecmd

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRegisterDefaultsAndEnv(t *testing.T) {
	for _, tc := range []struct {
		name, env, want string
		args            []string
	}{
		{"default", "", "nats://127.0.0.1:4222", nil},
		{"env", "nats://127.0.0.1:5222", "nats://127.0.0.1:5222", nil},
		{"flag wins over env", "nats://127.0.0.1:5222", "nats://127.0.0.1:6222", []string{"--nats-url", "nats://127.0.0.1:6222"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvNatsURL, tc.env)
			var c Common
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			c.Register(fs)
			require.NoError(t, fs.Parse(tc.args))
			assert.Equal(t, tc.want, c.NatsURL)
			assert.Equal(t, "console", c.LogFormat)
			assert.Equal(t, "info", c.LogLevel)
		})
	}
}
