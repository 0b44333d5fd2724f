package record

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultPolicyIsValid(t *testing.T) {
	p := DefaultPolicy()
	require.NoError(t, p.Validate())
	assert.Equal(t, 2.0, p.Weights.Health)
	assert.Equal(t, 0.1, p.MinScore)
	assert.Equal(t, 10, p.MaxCandidates)
	assert.Equal(t, 3, p.MaxRetries)
}

func TestPolicyValidate(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*Policy)
		field string
	}{
		{"negative weight", func(p *Policy) { p.Weights.Cost = -1 }, "weights.cost"},
		{"unknown strategy", func(p *Policy) { p.Strategy = "fastest" }, "strategy"},
		{"min score", func(p *Policy) { p.MinScore = -0.5 }, "min_score"},
		{"no candidates", func(p *Policy) { p.MaxCandidates = 0 }, "max_candidates"},
		{"retries", func(p *Policy) { p.MaxRetries = 99 }, "max_retries"},
		{"retry delay", func(p *Policy) { p.RetryDelayMs = -1 }, "retry_delay_ms"},
		{"ack timeout", func(p *Policy) { p.AckTimeoutMs = 0 }, "ack_timeout_ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := DefaultPolicy()
			c.edit(&p)
			err := p.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.field)
		})
	}
	for _, s := range Strategies {
		p := DefaultPolicy()
		p.Strategy = s
		assert.NoError(t, p.Validate(), s)
	}
}
