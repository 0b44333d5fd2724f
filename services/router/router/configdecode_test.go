package router

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestDecodePolicy(t *testing.T) {
	base := record.DefaultPolicy()
	cases := []struct {
		name    string
		in      string
		want    func(*record.Policy)
		wantErr string
	}{
		{name: "strategy only keeps the rest", in: `{"strategy":"round_robin"}`,
			want: func(p *record.Policy) { p.Strategy = record.StrategyRoundRobin }},
		{name: "one weight", in: `{"weights":{"latency":3}}`,
			want: func(p *record.Policy) { p.Weights.Latency = 3 }},
		{name: "explicit zero weight disables a policy", in: `{"weights":{"cost":0}}`,
			want: func(p *record.Policy) { p.Weights.Cost = 0 }},
		{name: "all zero weights mean defaults", in: `{"weights":{"health":0,"latency":0,"privacy":0,"locality":0,"cost":0,"load":0}}`},
		{name: "zero min_score kept", in: `{"min_score":0}`, want: func(p *record.Policy) { p.MinScore = 0 }},
		{name: "retries and timeouts", in: `{"max_retries":1,"retry_delay_ms":5,"ack_timeout_ms":300,"max_candidates":3}`,
			want: func(p *record.Policy) { p.MaxRetries, p.RetryDelayMs, p.AckTimeoutMs, p.MaxCandidates = 1, 5, 300, 3 }},
		{name: "empty object is the base", in: `{}`},
		{name: "queue wait, zero answers at once", in: `{"max_queue_ms":0}`, want: func(p *record.Policy) { p.MaxQueueMs = 0 }},
		{name: "queue wait over an hour", in: `{"max_queue_ms":3600001}`, wantErr: "max_queue_ms"},
		{name: "unknown strategy", in: `{"strategy":"fastest"}`, wantErr: "strategy"},
		{name: "typo field", in: `{"stratgy":"round_robin"}`, wantErr: "unknown field"},
		{name: "negative weight", in: `{"weights":{"health":-1}}`, wantErr: "weights.health"},
		{name: "too many candidates", in: `{"max_candidates":100000}`, wantErr: "max_candidates"},
		{name: "malformed", in: `{"strategy":`, wantErr: "router.policy"},
		{name: "trailing data", in: `{} {}`, wantErr: "trailing"},
		{name: "not an object", in: `[]`, wantErr: "router.policy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodePolicy(base, []byte(tc.in))
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Equal(t, base, got, "the base policy is returned on error")
				return
			}
			require.NoError(t, err)
			want := record.DefaultPolicy()
			if tc.want != nil {
				tc.want(&want)
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestDecodeRegions(t *testing.T) {
	r, err := decodeRegions([]byte(`{"eu-west-1":{"privacy":"confidential","cost":0.8},"us":{}}`))
	require.NoError(t, err)
	require.NotNil(t, r["eu-west-1"].Privacy)
	assert.Equal(t, wire.PrivacyConfidential, *r["eu-west-1"].Privacy)
	assert.Equal(t, 0.8, *r["eu-west-1"].Cost)
	assert.Nil(t, r["us"].Cost)
	for _, bad := range []string{`{"eu":{"privacy":"secret"}}`, `{"eu":{"cost":1.5}}`, `{"e.u":{}}`, `{"eu":{"costs":1}}`, `[1]`} {
		_, err := decodeRegions([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func TestDecodeTenants(t *testing.T) {
	tn, err := decodeTenants([]byte(`{"acme":{"requests_per_second":5,"burst":10},"*":{"requests_per_second":100}}`))
	require.NoError(t, err)
	assert.Equal(t, record.Tenant{RequestsPerSecond: 5, Burst: 10}, tn["acme"])
	for _, bad := range []string{`{"":{}}`, `{"a":{"requests_per_second":-1}}`, `{"a":{"burst":-2}}`, `{"a":{"rps":1}}`, `"x"`} {
		_, err := decodeTenants([]byte(bad))
		assert.Error(t, err, bad)
	}
}

func TestTenantLimits(t *testing.T) {
	l := newTenantLimits()
	now := l.now()
	l.now = func() time.Time { return now }
	l.configure(record.Tenants{"acme": {RequestsPerSecond: 2, Burst: 3}, DefaultTenant: {RequestsPerSecond: 1}})
	for i := 0; i < 3; i++ {
		assert.True(t, l.allow("acme"), "burst %d", i)
	}
	assert.False(t, l.allow("acme"), "over the burst")
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	assert.True(t, l.allow("acme"))
	assert.False(t, l.allow("acme"))
	assert.True(t, l.allow("other"), "default tenant burst ceil(1)")
	assert.False(t, l.allow("other"))
	l.configure(nil)
	for i := 0; i < 10; i++ {
		assert.True(t, l.allow("acme"), "no limits configured")
	}
}
