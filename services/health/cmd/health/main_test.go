package main

import (
	"io"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every flag is also a FEDMESH_* variable; the command line wins.
func TestFlagsAndEnv(t *testing.T) {
	cfg := health.DefaultConfig()
	env := map[string]string{
		"FEDMESH_CHECK_INTERVAL":    "3s",
		"FEDMESH_FAILURE_THRESHOLD": "7",
		"FEDMESH_PREFIX":            "test",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	common, err := servicecmd.Parse(command(&cfg), []string{"--failure-threshold", "9", "--forget-after", "1m"}, lookup, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "test", common.Prefix)
	assert.Equal(t, 3*time.Second, cfg.CheckInterval, "from the environment")
	assert.Equal(t, 9, cfg.FailureThreshold, "the flag wins over FEDMESH_FAILURE_THRESHOLD")
	assert.Equal(t, time.Minute, cfg.ForgetAfter)
	assert.Equal(t, health.DefaultResetTimeout, cfg.ResetTimeout, "untouched flags keep the default")
}
