package servicecmd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeCreds writes a .creds file whose user JWT has name and tags, as
// `fedmesh auth issue` makes them.
func writeCreds(t *testing.T, name string, tags ...string) string {
	t.Helper()
	acc, err := nkeys.CreateAccount()
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	uc.Tags.Add(tags...)
	token, err := uc.Encode(acc)
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(token, seed)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), name+".creds")
	require.NoError(t, os.WriteFile(path, creds, 0o600))
	return path
}

// Every instance has an inbox of its own: with a fedmesh credential the
// one its name allows (two routers on credentials router-1 and router-2
// never share one), without one its instance name.
func TestInboxPrefixFor(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.creds")
	require.NoError(t, os.WriteFile(junk, []byte("not a credential"), 0o600))
	for _, tc := range []struct {
		name, service, id, creds string
		want, wrong              string
	}{
		{"open router", "router", "abc", "", "_INBOX.router.router-abc", ""},
		{"open node agent", "nodeagent", "node-x", "", "_INBOX.node.node-x", ""},
		{"router-1", "router", "abc", writeCreds(t, "router-1", "role:router"), "_INBOX.router.router-1", ""},
		{"router-2", "router", "abc", writeCreds(t, "router-2", "role:router"), "_INBOX.router.router-2", ""},
		{"catalog", "catalog", "abc", writeCreds(t, "catalog-eu", "role:catalog"), "_INBOX.catalog.catalog-eu", ""},
		{"a node", "nodeagent", "node-x", writeCreds(t, "node-x", "role:node", "region:eu"), "_INBOX.node.node-x", ""},
		{"the operator's, for anything", "health", "abc", writeCreds(t, "operator", "role:operator"), "_INBOX.health.operator", ""},
		{"not fedmesh's", "router", "abc", writeCreds(t, "some user"), "_INBOX.router.router-abc", ""},
		{"another role's", "router", "abc", writeCreds(t, "catalog-1", "role:catalog"), "", "a catalog credential"},
		{"a client's", "gateway", "abc", writeCreds(t, "client-acme", "role:client", "tenant:acme"), "", "not a gateway one"},
		{"missing", "router", "abc", filepath.Join(t.TempDir(), "none.creds"), "", "no such file"},
		{"not a credential", "router", "abc", junk, "", junk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Common{Creds: tc.creds}
			got, err := c.InboxPrefixFor(tc.service, tc.id)
			if tc.wrong != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wrong)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
