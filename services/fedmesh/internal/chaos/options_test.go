package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	require.NoError(t, o.Validate())
	assert.Equal(t, DefaultDuration, o.Duration)
	assert.Equal(t, DefaultClients, o.Clients)
	assert.Equal(t, DefaultNodes, o.Nodes)
	assert.Equal(t, DefaultStopFor, o.StopFor)
	assert.Equal(t, DefaultCalm, o.Calm)
	assert.Equal(t, 120*time.Second, o.Duration-o.Calm, "the issue's 120 s of faults after the fault-free phase")
	assert.Zero(t, o.NodeTTL, "the full run keeps the catalog's node_ttl")
	assert.Zero(t, o.ResetTimeout, "the full run keeps health's reset_timeout")

	s := Options{Short: true}.withDefaults()
	require.NoError(t, s.Validate())
	assert.Equal(t, ShortOptions().Duration, s.Duration)
	assert.Positive(t, s.Calm, "the short run has a fault-free phase too")
	assert.Less(t, s.NodeTTL, s.StopFor, "a stopped node outlives its record in the short run too")
	assert.Less(t, s.StopFor+s.ResetTimeout, afterWait, "a circuit the SIGSTOP phase opened is half_open again before the check after the bad input gives up")
	assert.Equal(t, 7, Options{Short: true, Clients: 7}.withDefaults().Clients, "a flag beats the short default")
}

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Options)
		want string
	}{
		{"duration", func(o *Options) { o.Duration = time.Second }, "duration"},
		{"nodes", func(o *Options) { o.Nodes = 2 }, "nodes"},
		{"tokens", func(o *Options) { o.MinTokens, o.MaxTokens = 50, 10 }, "tokens"},
		{"delay", func(o *Options) { o.MaxTokenDelay = time.Microsecond }, "token delay"},
		{"timeout", func(o *Options) { o.ClientTimeout = time.Millisecond }, "client timeout"},
		{"fault", func(o *Options) { o.Faults = []string{"meteor"} }, "faults"},
		{"negative", func(o *Options) { o.Linger = -1 }, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{}.withDefaults()
			tc.mut(&o)
			err := o.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// The short run fits its budget: warm-up, every fault's phase and the bad
// input's tail stay under 50 s of load, so start-up and wind-down keep the
// whole command under 60 s.
func TestPhasesFitTheBudget(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		max  time.Duration
	}{
		{"short", Options{Short: true}, 50 * time.Second},
		{"full", Options{}, 150 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o.withDefaults()
			chosen := make([]*fault, len(faults))
			for i := range faults {
				chosen[i] = &faults[i]
			}
			ls := phases(&o, chosen, inputTail)
			total := o.Warmup + o.Calm + inputTail
			for i, l := range ls {
				assert.GreaterOrEqual(t, l, chosen[i].hold(&o), chosen[i].name)
				total += l
			}
			assert.LessOrEqual(t, total, tc.max)
		})
	}
}

func TestFaultByName(t *testing.T) {
	for _, n := range []string{"kill-node", "drain-node", "kill-router", "kill-server", "stop-node", "kill-health", "SIGKILL router"} {
		assert.NotNil(t, faultByName(n), n)
	}
	assert.Nil(t, faultByName("flood"))
}
