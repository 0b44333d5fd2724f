package router

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
)

// The exported decoders are the ones applyConfig uses; DecodePolicy gives
// the base the defaults New gives Config.Policy.
func TestExportedConfigDecoders(t *testing.T) {
	p, err := DecodePolicy(record.Policy{}, []byte(`{"min_score":0.2}`))
	require.NoError(t, err)
	want := record.DefaultPolicy()
	want.MinScore = 0.2
	assert.Equal(t, want, p, "zero base is the default policy")

	base := record.Policy{Strategy: record.StrategyPowerOfTwo} // as --strategy sets it
	p, err = DecodePolicy(base, []byte(`{"max_retries":1}`))
	require.NoError(t, err)
	assert.Equal(t, record.StrategyPowerOfTwo, p.Strategy, "absent fields keep the base")
	assert.Equal(t, 1, p.MaxRetries)
	assert.Equal(t, record.DefaultPolicy().Weights, p.Weights, "base zeros take the defaults")

	pol := func(b []byte) error { _, err := DecodePolicy(record.Policy{}, b); return err }
	reg := func(b []byte) error { _, err := DecodeRegions(b); return err }
	ten := func(b []byte) error { _, err := DecodeTenants(b); return err }
	// each error names the field; the bad privacy name (an UnmarshalText
	// error, which encoding/json reports without its path) too
	for _, tc := range []struct {
		name, in, field string
		fn              func([]byte) error
	}{
		{name: "policy", fn: pol, in: `{"strategy":"fastest"}`, field: "strategy"},
		{name: "policy type", fn: pol, in: `{"max_retries":"3"}`, field: "max_retries"},
		{name: "policy weights type", fn: pol, in: `{"weights":{"cost":"x"}}`, field: "weights.cost"},
		{name: "regions privacy", fn: reg, in: `{"eu":{"privacy":"secret"}}`, field: "regions.eu.privacy"},
		{name: "regions privacy type", fn: reg, in: `{"eu":{"privacy":3}}`, field: "privacy"},
		{name: "regions cost type", fn: reg, in: `{"eu":{"cost":"x"}}`, field: "cost"},
		{name: "regions", fn: reg, in: `{"eu":{"cost":2}}`, field: "regions.eu.cost"},
		{name: "tenants", fn: ten, in: `{"a":{"burst":-1}}`, field: "tenants.a.burst"},
		{name: "tenants type", fn: ten, in: `{"a":{"burst":1.5}}`, field: "burst"},
	} {
		err := tc.fn([]byte(tc.in))
		if assert.Error(t, err, tc.name) {
			assert.Contains(t, err.Error(), tc.field, "%s: the error names the field", tc.name)
		}
	}
}
