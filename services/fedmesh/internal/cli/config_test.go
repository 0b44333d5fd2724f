package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
)

// runCLI runs one fedmesh command line against url with stdin, as main does
// (exit code from ExitCode).
func runCLI(t *testing.T, url, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := NewRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--nats-url", url, "--timeout", "5s"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err != nil {
		errb.WriteString("fedmesh: " + err.Error() + "\n")
	}
	return out.String(), errb.String(), ExitCode(err)
}

// configServer is an embedded server with the three buckets, and fed_config.
func configServer(t *testing.T) (*server.Server, jetstream.KeyValue) {
	t.Helper()
	s := natsembed.StartForTest(t)
	set := natsembed.BucketsForTest(t, natsembed.ConnectForTest(t, s))
	return s, set.Config
}

func stored(t *testing.T, kv jetstream.KeyValue, key string) jetstream.KeyValueEntry {
	t.Helper()
	e, err := kv.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	require.NoError(t, err)
	return e
}

func TestConfigGetUnsetPrintsDefaults(t *testing.T) {
	s, _ := configServer(t)
	cases := []struct {
		cmd, key string
		want     any
		decoded  func(string) (any, error)
	}{
		{"policy", record.ConfigKeyPolicy, record.DefaultPolicy(), func(s string) (any, error) {
			var p record.Policy
			return p, json.Unmarshal([]byte(s), &p)
		}},
		{"regions", record.ConfigKeyRegions, record.Regions{}, func(s string) (any, error) {
			var r record.Regions
			return r, json.Unmarshal([]byte(s), &r)
		}},
		{"tenants", record.ConfigKeyTenants, record.Tenants{}, func(s string) (any, error) {
			var r record.Tenants
			return r, json.Unmarshal([]byte(s), &r)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.cmd, func(t *testing.T) {
			out, errOut, code := runCLI(t, s.ClientURL(), "", tc.cmd, "get")
			assert.Equal(t, ExitUnset, code, errOut)
			assert.Contains(t, errOut, "fed_config "+tc.key+" is not set")
			assert.Contains(t, errOut, "defaults (not stored)")
			got, err := tc.decoded(out)
			require.NoError(t, err, "stdout is the defaults' JSON: %q", out)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestConfigWithoutBucket(t *testing.T) {
	s := natsembed.StartForTest(t) // no service ever created the buckets
	for _, args := range [][]string{{"policy", "get"}, {"tenants", "set", "-"}} {
		_, errOut, code := runCLI(t, s.ClientURL(), `{}`, args...)
		assert.Equal(t, ExitError, code, errOut)
		assert.Contains(t, errOut, "bucket fed_config does not exist")
	}
	js, err := jetstream.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	_, err = js.KeyValue(context.Background(), "fed_config")
	assert.ErrorIs(t, err, jetstream.ErrBucketNotFound, "set must not create the bucket")
}

// validateCases: good values pass, bad ones fail naming the field, exactly
// as the router's decoder decides.
var validateCases = []struct {
	cmd, in string
	field   string // "" = valid
}{
	{"policy", `{"strategy":"round_robin"}`, ""},
	{"policy", `{}`, ""},
	{"policy", `{"max_candidates":0,"ack_timeout_ms":0}`, ""}, // zeros that can never be meant take the defaults
	{"policy", `{"weights":{"cost":0},"min_score":0,"max_retries":0,"max_queue_ms":0}`, ""},
	{"policy", "  {\"weights\": {\"latency\": 3}}\n", ""},
	{"policy", `{"weights":{"cost":-1}}`, "weights.cost"},
	{"policy", `{"weights":{"health":101}}`, "weights.health"},
	{"policy", `{"strategy":"fastest"}`, "strategy"},
	{"policy", `{"min_score":11}`, "min_score"},
	{"policy", `{"max_candidates":10001}`, "max_candidates"},
	{"policy", `{"max_retries":21}`, "max_retries"},
	{"policy", `{"retry_delay_ms":-1}`, "retry_delay_ms"},
	{"policy", `{"ack_timeout_ms":60001}`, "ack_timeout_ms"},
	{"policy", `{"max_queue_ms":3600001}`, "max_queue_ms"},
	{"policy", `{"max_retries":"3"}`, "max_retries"},
	{"policy", `{"stratgy":"round_robin"}`, "stratgy"},
	{"policy", `{} {}`, "trailing data"},
	{"policy", `[]`, "router.policy"},
	{"policy", ``, "empty"},
	{"regions", `{"eu-west":{"privacy":"confidential","cost":0.8},"us":{}}`, ""},
	{"regions", `{}`, ""},
	{"regions", `{"eu":{"cost":1.5}}`, "regions.eu.cost"},
	{"regions", `{"eu":{"privacy":"secret"}}`, "regions.eu.privacy"},
	{"regions", `{"eu":{"costs":1}}`, "costs"},
	{"regions", `{"e.u":{}}`, "region"},
	{"tenants", `{"acme":{"requests_per_second":5,"burst":10},"*":{"requests_per_second":100}}`, ""},
	{"tenants", `{"a":{"requests_per_second":-1}}`, "tenants.a.requests_per_second"},
	{"tenants", `{"a":{"requests_per_second":2e9}}`, "tenants.a.requests_per_second"},
	{"tenants", `{"a":{"burst":-2}}`, "tenants.a.burst"},
	{"tenants", `{"a":{"rps":1}}`, "rps"},
	{"tenants", `{"":{}}`, "empty tenant name"},
}

// routerAccepts is the router's own verdict on a value.
func routerAccepts(cmd, in string) bool {
	var err error
	switch cmd {
	case "policy":
		_, err = router.DecodePolicy(record.Policy{}, []byte(in))
	case "regions":
		_, err = router.DecodeRegions([]byte(in))
	case "tenants":
		_, err = router.DecodeTenants([]byte(in))
	}
	return err == nil
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	for i, tc := range validateCases {
		t.Run(tc.cmd+" "+tc.in, func(t *testing.T) {
			file := filepath.Join(dir, strings.Repeat("x", i+1)+".json")
			require.NoError(t, os.WriteFile(file, []byte(tc.in), 0o600))
			for _, src := range []string{"-", file} {
				// no server: validate needs no connection
				out, errOut, code := runCLI(t, "nats://127.0.0.1:1", tc.in, tc.cmd, "validate", src)
				if tc.field == "" {
					assert.Equal(t, 0, code, errOut)
					assert.Equal(t, "ok\n", out)
					assert.True(t, routerAccepts(tc.cmd, tc.in), "the router accepts it too")
					continue
				}
				assert.Equal(t, ExitInvalid, code, "%s: %s", src, errOut)
				assert.Contains(t, errOut, tc.field, "the error names the field")
				assert.Empty(t, out)
				assert.False(t, routerAccepts(tc.cmd, tc.in), "the router refuses it too")
			}
		})
	}
}

func TestConfigValidateMissingFile(t *testing.T) {
	_, errOut, code := runCLI(t, "nats://127.0.0.1:1", "", "policy", "validate", filepath.Join(t.TempDir(), "nope.json"))
	assert.Equal(t, ExitError, code)
	assert.Contains(t, errOut, "nope.json")
}

func TestConfigSetRefusesBadValueAndWritesNothing(t *testing.T) {
	s, kv := configServer(t)
	// unset key: stays unset
	for _, tc := range validateCases {
		if tc.field == "" {
			continue
		}
		_, errOut, code := runCLI(t, s.ClientURL(), tc.in, tc.cmd, "set", "-")
		assert.Equal(t, ExitInvalid, code, errOut)
		assert.Contains(t, errOut, tc.field)
	}
	for _, key := range []string{record.ConfigKeyPolicy, record.ConfigKeyRegions, record.ConfigKeyTenants} {
		assert.Nil(t, stored(t, kv, key), "%s written by a refused set", key)
	}

	// set key: keeps its value and revision
	rev, err := kv.Put(context.Background(), record.ConfigKeyPolicy, []byte(`{"strategy":"round_robin"}`))
	require.NoError(t, err)
	_, errOut, code := runCLI(t, s.ClientURL(), `{"strategy":"round_robin","max_retries":99}`, "policy", "set", "-")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errOut, "max_retries")
	e := stored(t, kv, record.ConfigKeyPolicy)
	require.NotNil(t, e)
	assert.Equal(t, rev, e.Revision())
	assert.JSONEq(t, `{"strategy":"round_robin"}`, string(e.Value()))
}

func TestConfigSetThenGet(t *testing.T) {
	s, kv := configServer(t)
	url := s.ClientURL()

	out, errOut, code := runCLI(t, url, `{"strategy":"round_robin", "weights":{"cost":0.5}}`, "policy", "set", "-")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "fed_config router.policy (unset):")
	assert.Contains(t, out, `strategy: (unset) → "round_robin"`)
	assert.Contains(t, out, `weights.cost: (unset) → 0.5`)
	e := stored(t, kv, record.ConfigKeyPolicy)
	require.NotNil(t, e)
	assert.Contains(t, out, "written: revision "+revStr(e.Revision()))
	assert.Equal(t, `{"strategy":"round_robin","weights":{"cost":0.5}}`, string(e.Value()), "stored compacted, as given")

	out, errOut, code = runCLI(t, url, "", "policy", "get")
	require.Equal(t, 0, code, errOut)
	assert.JSONEq(t, string(e.Value()), out)
	assert.Contains(t, out, "\n  \"strategy\": \"round_robin\"", "pretty JSON")
	assert.Contains(t, errOut, "revision "+revStr(e.Revision()))

	// a second set shows old → new per field, and moves the revision on
	out, errOut, code = runCLI(t, url, `{"strategy":"power_of_two","min_score":0.2}`, "policy", "set", "-")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "(revision "+revStr(e.Revision())+")")
	assert.Contains(t, out, `strategy: "round_robin" → "power_of_two"`)
	assert.Contains(t, out, `min_score: (unset) → 0.2`)
	assert.Contains(t, out, `weights.cost: 0.5 → (unset)`)
	e2 := stored(t, kv, record.ConfigKeyPolicy)
	assert.Greater(t, e2.Revision(), e.Revision())
	assert.Contains(t, out, "written: revision "+revStr(e2.Revision()))

	// the same value again writes nothing
	out, errOut, code = runCLI(t, url, `{ "strategy": "power_of_two", "min_score": 0.2 }`, "policy", "set", "-")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "unchanged")
	assert.Equal(t, e2.Revision(), stored(t, kv, record.ConfigKeyPolicy).Revision())

	// regions and tenants the same way, from a file
	file := filepath.Join(t.TempDir(), "regions.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"eu-west":{"privacy":"confidential"}}`), 0o600))
	out, errOut, code = runCLI(t, url, "", "regions", "set", file)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `eu-west.privacy: (unset) → "confidential"`)
	out, _, code = runCLI(t, url, "", "regions", "get")
	assert.Equal(t, 0, code)
	assert.JSONEq(t, `{"eu-west":{"privacy":"confidential"}}`, out)

	out, errOut, code = runCLI(t, url, `{"*":{"requests_per_second":10}}`, "tenants", "set", "-")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, `*.requests_per_second: (unset) → 10`)
	out, _, _ = runCLI(t, url, "", "tenants", "get")
	assert.JSONEq(t, `{"*":{"requests_per_second":10}}`, out)

	// after a delete the key is unset again, and set creates it over the marker
	require.NoError(t, kv.Delete(context.Background(), record.ConfigKeyTenants))
	_, _, code = runCLI(t, url, "", "tenants", "get")
	assert.Equal(t, ExitUnset, code)
	out, errOut, code = runCLI(t, url, `{"acme":{"requests_per_second":1}}`, "tenants", "set", "-")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "(unset)")
}

func TestConfigGetStoredValueRoutersReject(t *testing.T) {
	s, kv := configServer(t)
	_, err := kv.Put(context.Background(), record.ConfigKeyPolicy, []byte(`{"strategy":"fastest"}`))
	require.NoError(t, err)
	out, errOut, code := runCLI(t, s.ClientURL(), "", "policy", "get")
	assert.Equal(t, ExitInvalid, code)
	assert.JSONEq(t, `{"strategy":"fastest"}`, out, "the stored value is still shown")
	assert.Contains(t, errOut, "rejected by routers")
	assert.Contains(t, errOut, "strategy")

	_, err = kv.Put(context.Background(), record.ConfigKeyTenants, []byte(`not json`))
	require.NoError(t, err)
	out, _, code = runCLI(t, s.ClientURL(), "", "tenants", "get")
	assert.Equal(t, ExitInvalid, code)
	assert.Equal(t, "not json\n", out)
}

// racingKV is a fed_config handle where someone else writes right after
// the CLI has read the key.
type racingKV struct {
	jetstream.KeyValue
	other func()
}

func (r *racingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := r.KeyValue.Get(ctx, key)
	r.other()
	return e, err
}

func TestConfigSetLosesARace(t *testing.T) {
	cases := []struct {
		name   string
		before string // "" = unset
	}{
		{"over a value", `{"strategy":"round_robin"}`},
		{"over an unset key", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, kv := configServer(t)
			ctx := context.Background()
			if tc.before != "" {
				_, err := kv.Put(ctx, record.ConfigKeyPolicy, []byte(tc.before))
				require.NoError(t, err)
			}
			theirs := []byte(`{"strategy":"least_connections"}`)
			var theirRev uint64
			race := &racingKV{KeyValue: kv, other: func() {
				var err error
				theirRev, err = kv.Put(ctx, record.ConfigKeyPolicy, theirs)
				require.NoError(t, err)
			}}
			var out bytes.Buffer
			ck := configKeys[0]
			require.Equal(t, record.ConfigKeyPolicy, ck.key)
			err := ck.set(ctx, race, []byte(`{"strategy":"power_of_two"}`), &out)
			require.Error(t, err)
			assert.Equal(t, ExitConflict, ExitCode(err))
			assert.Contains(t, err.Error(), "written by someone else")
			assert.Contains(t, err.Error(), "nothing written")
			e := stored(t, kv, record.ConfigKeyPolicy)
			assert.Equal(t, theirRev, e.Revision(), "their write stands")
			assert.Equal(t, string(theirs), string(e.Value()))
			assert.NotContains(t, out.String(), "written: revision")
		})
	}
}

// A router started on the bucket applies what set wrote.
func TestConfigSetAppliedByRouter(t *testing.T) {
	s, _ := configServer(t)
	rt, err := router.New(natsembed.ConnectForTest(t, s), router.Config{}, natsembed.Logger(t))
	require.NoError(t, err)
	natsembed.RunForTest(t, rt)
	require.Equal(t, record.StrategyExpectedTTFT, rt.Stats().Strategy, "the default")

	_, errOut, code := runCLI(t, s.ClientURL(), `{"strategy":"round_robin"}`, "policy", "set", "-")
	require.Equal(t, 0, code, errOut)
	natsembed.Eventually(t, 0, func() error {
		return natsembed.Check(rt.Stats().Strategy == record.StrategyRoundRobin, "router strategy %s", rt.Stats().Strategy)
	})
}

func TestConfigExitCode(t *testing.T) {
	assert.Equal(t, 0, ExitCode(nil))
	assert.Equal(t, ExitError, ExitCode(errors.New("x")))
	wrapped := errors.Join(errors.New("context"), &exitError{ExitConflict, errors.New("race")})
	assert.Equal(t, ExitConflict, ExitCode(wrapped))
}

func TestConfigFieldDiff(t *testing.T) {
	cases := []struct {
		name, old, new string
		want           []string
	}{
		{"unset to value", "", `{"a":1,"b":{"c":"x"}}`, []string{"a: (unset) → 1", `b.c: (unset) → "x"`}},
		{"same fields other order", `{"a":1,"b":2}`, `{"b":2,"a":1}`, nil},
		{"changed and removed", `{"a":1,"b":2}`, `{"a":1.5}`, []string{"a: 1 → 1.5", "b: 2 → (unset)"}},
		{"empty object is a field", `{"us":{"cost":0.5}}`, `{"us":{}}`, []string{"us: (unset) → {}", "us.cost: 0.5 → (unset)"}},
		{"not JSON before", `oops`, `{"a":1}`, []string{`(value): not JSON "oops" → (unset)`, "a: (unset) → 1"}},
		{"no HTML escaping", `{}`, `{"a":"<b>"}`, []string{`a: (unset) → "<b>"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, fieldDiff([]byte(tc.old), []byte(tc.new)))
		})
	}
}

// FuzzConfigFieldDiff: both sides of a diff come from the bucket or a file.
func FuzzConfigFieldDiff(f *testing.F) {
	f.Add([]byte(`{"strategy":"round_robin"}`), []byte(`{"strategy":"power_of_two","weights":{"cost":0}}`))
	f.Add([]byte(``), []byte(`{"eu":{"privacy":"confidential"}}`))
	f.Add([]byte(`not json`), []byte(`[1,2,{"a":null}]`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if d := fieldDiff(a, a); len(d) != 0 {
			t.Fatalf("a value differs from itself: %q", d)
		}
		for _, line := range fieldDiff(a, b) {
			if !strings.Contains(line, " → ") {
				t.Fatalf("line without an arrow: %q", line)
			}
		}
	})
}

func revStr(v uint64) string { return strconv.FormatUint(v, 10) }
