package servicecmd

import (
	"errors"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlagsAndEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantURL  string
		wantOwn  int
		wantFail bool
	}{
		{"defaults", nil, nil, "nats://127.0.0.1:4222", 7, false},
		{"env", map[string]string{"FEDMESH_NATS_URL": "nats://127.0.0.1:5222", "FEDMESH_MAX_THINGS": "9"}, nil, "nats://127.0.0.1:5222", 9, false},
		{"flag wins over env", map[string]string{"FEDMESH_NATS_URL": "nats://127.0.0.1:5222", "FEDMESH_MAX_THINGS": "9"},
			[]string{"--nats-url", "nats://127.0.0.1:6222", "--max-things", "3"}, "nats://127.0.0.1:6222", 3, false},
		{"bad env value", map[string]string{"FEDMESH_MAX_THINGS": "many"}, nil, "", 0, true},
		{"bad flag", nil, []string{"--nope"}, "", 0, true},
		{"stray argument", nil, []string{"extra"}, "", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own := 0
			c := Command{Name: "x", Flags: func(fs *flag.FlagSet) { fs.IntVar(&own, "max-things", 7, "things") }}
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			common, err := Parse(c, tc.args, lookup, io.Discard)
			if tc.wantFail {
				require.ErrorIs(t, err, ErrUsage)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantURL, common.NatsURL)
			assert.Equal(t, "console", common.LogFormat)
			assert.Equal(t, "info", common.LogLevel)
			assert.Equal(t, tc.wantOwn, own)
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
		"nats://alice:s3cret@127.0.0.1:4222":         "nats://alice:redacted@127.0.0.1:4222",
		"nats://tok3n@127.0.0.1:4222,nats://h2:4222": "nats://redacted@127.0.0.1:4222,nats://h2:4222",
		"tls://u:p@a:1, nats://b:2":                  "tls://u:redacted@a:1,nats://b:2",
	} {
		got := Redact(in)
		assert.Equal(t, want, got, in)
		assert.NotContains(t, got, "s3cret")
	}
}

func TestEnvName(t *testing.T) {
	assert.Equal(t, "FEDMESH_NATS_URL", EnvName("nats-url"))
	assert.Equal(t, "FEDMESH_NODE_ID", EnvName("node-id"))
}

func TestPrepare(t *testing.T) {
	fileURL := "nats://127.0.0.1:7222"
	for _, tc := range []struct {
		name    string
		args    []string
		wantURL string
		fail    bool
	}{
		{"fills what was not given", nil, fileURL, false},
		{"a given flag wins", []string{"--nats-url", "nats://127.0.0.1:6222"}, "nats://127.0.0.1:6222", false},
		{"its error is a usage error", []string{"--max-things", "0"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own := 1
			c := Command{Name: "x", Flags: func(fs *flag.FlagSet) { fs.IntVar(&own, "max-things", 1, "things") },
				Prepare: func(common *Common, given func(string) bool) error {
					if own < 1 {
						return errors.New("max-things must be >= 1")
					}
					if !given("nats-url") {
						common.NatsURL = fileURL
					}
					return nil
				}}
			common, err := Parse(c, tc.args, func(string) (string, bool) { return "", false }, io.Discard)
			if tc.fail {
				require.ErrorIs(t, err, ErrUsage)
				assert.Equal(t, 2, ExitCode(err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantURL, common.NatsURL)
		})
	}
}
