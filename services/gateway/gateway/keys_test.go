package gateway

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKeys(t *testing.T) {
	cases := []struct {
		name, doc string
		want      map[string]Tenant
		err       string
	}{
		{"yaml", `
keys:
  - key: sk-a
    tenant: acme
    privacy: confidential
    regions: [eu-west-1]
    requests_per_second: 10
    burst: 20
  - key: sk-b
    tenant: beta
`, map[string]Tenant{
			"sk-a": {ID: "acme", Privacy: "confidential", Regions: []string{"eu-west-1"}, RequestsPerSecond: 10, Burst: 20},
			"sk-b": {ID: "beta"}}, ""},
		{"json", `{"keys":[{"key":"sk-j","tenant":"jay","privacy":"public"}]}`,
			map[string]Tenant{"sk-j": {ID: "jay", Privacy: "public"}}, ""},
		{"empty", ``, map[string]Tenant{}, ""},
		{"unknown field", `{"keys":[{"key":"k","tenant":"t","privacyy":"public"}]}`, nil, "privacyy"},
		{"duplicate", `{"keys":[{"key":"sk-dup-1","tenant":"t"},{"key":"sk-dup-1","tenant":"u"}]}`, nil, "twice"},
		{"no key", `{"keys":[{"tenant":"t"}]}`, nil, "key is empty"},
		{"no tenant", `{"keys":[{"key":"k"}]}`, nil, "tenant is empty"},
		{"bad privacy", `{"keys":[{"key":"k","tenant":"t","privacy":"secret"}]}`, nil, "privacy"},
		{"bad region", `{"keys":[{"key":"k","tenant":"t","regions":["eu.west"]}]}`, nil, "region"},
		{"negative rate", `{"keys":[{"key":"k","tenant":"t","requests_per_second":-1}]}`, nil, "negative"},
		{"max concurrent", `{"keys":[{"key":"k","tenant":"t","max_concurrent":3}]}`, map[string]Tenant{"k": {ID: "t", MaxConcurrent: 3}}, ""},
		{"negative max concurrent", `{"keys":[{"key":"k","tenant":"t","max_concurrent":-3}]}`, nil, "max_concurrent"},
		{"not a document", `[1,2`, nil, "decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeys([]byte(tc.doc))
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestLoadKeysFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(p, []byte("keys:\n  - key: sk-file\n    tenant: filed\n"), 0o600))
	got, err := LoadKeys(p)
	require.NoError(t, err)
	assert.Equal(t, map[string]Tenant{"sk-file": {ID: "filed"}}, got)
	_, err = LoadKeys(filepath.Join(t.TempDir(), "missing.yaml"))
	assert.Error(t, err)
}

func TestParseKeysEnv(t *testing.T) {
	cases := []struct {
		name, v string
		want    map[string]Tenant
		err     bool
	}{
		{"pairs", "sk-1=acme, sk-2=beta", map[string]Tenant{"sk-1": {ID: "acme"}, "sk-2": {ID: "beta"}}, false},
		{"json", `{"keys":[{"key":"sk-3","tenant":"c","privacy":"restricted"}]}`, map[string]Tenant{"sk-3": {ID: "c", Privacy: "restricted"}}, false},
		{"empty", "", map[string]Tenant{}, false},
		{"no tenant", "sk-1=", nil, true},
		{"no equals", "sk-1", nil, true},
		{"duplicate", "sk-1=a,sk-1=b", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeysEnv(tc.v)
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter()
	now := time.Unix(0, 0)
	l.now = func() time.Time { return now }
	ten := Tenant{ID: "t", RequestsPerSecond: 2, Burst: 3}
	for i := 0; i < 3; i++ {
		ok, _ := l.allow(ten)
		require.True(t, ok, "burst request %d", i)
	}
	ok, wait := l.allow(ten)
	require.False(t, ok)
	assert.Equal(t, 500*time.Millisecond, wait)
	now = now.Add(500 * time.Millisecond)
	ok, _ = l.allow(ten)
	assert.True(t, ok, "one token back after 1/rate")
	ok, _ = l.allow(Tenant{ID: "free"})
	assert.True(t, ok, "no limit configured")
}

func TestSplitIncompleteUTF8(t *testing.T) {
	cases := []struct {
		in, complete, rest string
	}{
		{"abc", "abc", ""},
		{"a\xc3", "a", "\xc3"},
		{"\xe2\x82", "", "\xe2\x82"},
		{"\xe2\x82\xac", "\xe2\x82\xac", ""},
		{"x\xf0\x9f\x98", "x", "\xf0\x9f\x98"},
		{"\xff", "\xff", ""}, // invalid, not incomplete: passed on
	}
	for _, tc := range cases {
		c, r := splitIncompleteUTF8([]byte(tc.in))
		assert.Equal(t, tc.complete, string(c), "%q", tc.in)
		assert.Equal(t, tc.rest, string(r), "%q", tc.in)
	}
}
