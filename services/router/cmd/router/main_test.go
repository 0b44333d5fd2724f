package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func TestFlagsAndEnv(t *testing.T) {
	env := map[string]string{
		"FEDMESH_REGION":        "eu-west",
		"FEDMESH_MAX_IN_FLIGHT": "64",
		"FEDMESH_STRATEGY":      record.StrategyPowerOfTwo,
		"FEDMESH_PREFIX":        "acme",
		"FEDMESH_MAX_QUEUE":     "100",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg := router.DefaultConfig()
	common, err := servicecmd.Parse(command(&cfg), []string{"--max-in-flight", "8", "--max-queue-ms", "750"}, lookup, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "eu-west", cfg.Region)
	assert.Equal(t, 8, cfg.MaxInFlight, "a flag wins over its variable")
	assert.Equal(t, record.StrategyPowerOfTwo, cfg.Policy.Strategy)
	assert.Equal(t, "acme", common.Prefix)
	assert.Equal(t, 100, cfg.MaxQueue)
	assert.Equal(t, 750, cfg.Policy.MaxQueueMs)
}
