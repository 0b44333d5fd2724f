package servicecmd

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// --creds, --nkey, --tls-ca, --tls-cert and --tls-key (and their FEDMESH_*
// variables) reach the connection options; contradictions are refused
// before anything connects.
func TestConnOptions(t *testing.T) {
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	seedFile := filepath.Join(dir, "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	junk := filepath.Join(dir, "junk.nk")
	require.NoError(t, os.WriteFile(junk, []byte("not a seed"), 0o600))

	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		n     int    // options
		wrong string // "" = valid
	}{
		{"none", nil, nil, 0, ""},
		{"creds", nil, []string{"--creds", "u.creds"}, 1, ""},
		{"creds from the env", map[string]string{"FEDMESH_CREDS": "u.creds"}, nil, 1, ""},
		{"nkey", nil, []string{"--nkey", seedFile}, 1, ""},
		{"a bad nkey file", nil, []string{"--nkey", junk}, 0, "--nkey"},
		{"creds and nkey", nil, []string{"--creds", "u.creds", "--nkey", seedFile}, 0, "give one"},
		{"a CA and a client certificate", map[string]string{"FEDMESH_TLS_CA": "ca.pem"}, []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, 2, ""},
		{"a certificate without its key", nil, []string{"--tls-cert", "c.pem"}, 0, "go together"},
		{"a key without its certificate", map[string]string{"FEDMESH_TLS_KEY": "k.pem"}, nil, 0, "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			common, err := Parse(Command{Name: "x"}, tc.args, lookup, io.Discard)
			require.NoError(t, err)
			opts, err := common.ConnOptions()
			if tc.wrong != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wrong)
				return
			}
			require.NoError(t, err)
			assert.Len(t, opts, tc.n)
		})
	}
}
