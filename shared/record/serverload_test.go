package record

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestServerLoadHeader(t *testing.T) {
	l := ServerLoad{Running: 12, Waiting: 3, KVUsage: 0.4216, PrefixHitRate: 0.61}
	got, err := ParseServerLoad(l.Header())
	require.NoError(t, err)
	assert.Equal(t, ServerLoad{Running: 12, Waiting: 3, KVUsage: 0.422, PrefixHitRate: 0.61}, got)
	for _, bad := range []string{"r=-1", "w=x", "kv=1.5", "ph=NaN", "kv=Inf", "r", "r=2000000"} {
		_, err := ParseServerLoad(bad)
		assert.Error(t, err, bad)
	}
	got, err = ParseServerLoad("r=1;future=7")
	require.NoError(t, err, "unknown keys are ignored")
	assert.Equal(t, 1, got.Running)
}

func FuzzParseServerLoad(f *testing.F) {
	f.Add("r=12;w=3;kv=0.422;ph=0.610")
	f.Add("kv=1e309;r=0")
	f.Fuzz(func(t *testing.T, v string) {
		l, err := ParseServerLoad(v)
		if err != nil {
			return
		}
		if l.Validate() != nil {
			t.Fatalf("accepted invalid %+v from %q", l, v)
		}
		back, err := ParseServerLoad(l.Header())
		if err != nil || back.Running != l.Running || back.Waiting != l.Waiting {
			t.Fatalf("round trip of %+v: %+v, %v", l, back, err)
		}
	})
}
