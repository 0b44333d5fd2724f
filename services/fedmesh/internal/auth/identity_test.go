package auth

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestReadIdentity(t *testing.T) {
	dir, _ := initDir(t)
	d, err := Open(dir)
	require.NoError(t, err)
	for _, tc := range []struct {
		u     User
		want  Identity
		inbox string
	}{
		{User{Role: RoleClient, Tenant: "acme"}, Identity{Role: RoleClient, Tenant: "acme", Name: "client-acme"}, "_INBOX.acme"},
		{User{Role: RoleClient, Tenant: "acme", Name: "batch"}, Identity{Role: RoleClient, Tenant: "acme", Name: "batch"}, "_INBOX.acme"},
		{User{Role: RoleNode, NodeID: "gpu-1", Region: "eu", Clearance: wire.PrivacyConfidential},
			Identity{Role: RoleNode, Name: "gpu-1"}, "_INBOX.node.gpu-1"},
		{User{Role: RoleRouter, Name: "router-2"}, Identity{Role: RoleRouter, Name: "router-2"}, "_INBOX.router.router-2"},
		{User{Role: RoleCatalog, Name: "catalog-eu"}, Identity{Role: RoleCatalog, Name: "catalog-eu"}, "_INBOX.catalog.catalog-eu"},
		{User{Role: RoleOperator}, Identity{Role: RoleOperator, Name: "operator"}, "_INBOX"},
	} {
		creds, err := d.Issue(tc.u)
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "u.creds")
		require.NoError(t, os.WriteFile(path, creds, 0o600))
		id, err := ReadIdentity(path)
		require.NoError(t, err, tc.u.Role)
		assert.Equal(t, tc.want, id)
		assert.Equal(t, tc.inbox, id.Inbox(), tc.u.Role)
	}
	assert.Empty(t, Identity{Role: "admin"}.Inbox(), "not a fedmesh role")

	// A service issued without --name gets a name of its own: two gateways
	// never share an inbox.
	names := map[string]bool{}
	for range 3 {
		creds, err := d.Issue(User{Role: RoleGateway})
		require.NoError(t, err)
		name, err := CredsName(creds)
		require.NoError(t, err)
		assert.Regexp(t, `^gateway-[0-9a-f]{8}$`, name)
		names[name] = true
	}
	assert.Len(t, names, 3, "default service names repeat")

	_, err = ReadIdentity(filepath.Join(t.TempDir(), "missing.creds"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	junk := filepath.Join(t.TempDir(), "junk.creds")
	require.NoError(t, os.WriteFile(junk, []byte("not a creds file"), 0o600))
	_, err = ReadIdentity(junk)
	assert.Error(t, err)
}
