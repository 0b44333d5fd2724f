package auth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// makeOld rewrites dir as an older `auth init` would have made it: the
// client template without the fed.infer.custom.<tenant> deny, no key for
// clearance restricted yet, and a key of a role that is gone.
func makeOld(t *testing.T, dir string) {
	t.Helper()
	m, err := readManifest(dir)
	require.NoError(t, err)
	d, err := Open(dir)
	require.NoError(t, err)
	ac := d.account
	for _, p := range Perms(m.Prefix) {
		switch p.Key {
		case RoleClient:
			p.PubDeny = nil
			ac.SigningKeys.AddScopedSigner(scope(m.SigningKeys[p.Key], p))
		case NodeKey(wire.PrivacyRestricted):
			delete(ac.SigningKeys, m.SigningKeys[p.Key])
			delete(m.SigningKeys, p.Key)
			require.NoError(t, os.Remove(filepath.Join(dir, DirKeys, p.Key+".nk")))
		}
	}
	gone, err := nkeys.CreateAccount()
	require.NoError(t, err)
	gonePub, _ := gone.PublicKey()
	ac.SigningKeys.AddScopedSigner(scope(gonePub, Perm{Key: "admin", Role: "admin", Pub: []string{">"}, Sub: []string{">"}}))
	m.SigningKeys["admin"] = gonePub
	require.NoError(t, upgradeFilesAs(dir, ac, m))
}

// upgradeFilesAs writes ac and m signed by dir's operator, as they are.
func upgradeFilesAs(dir string, ac *jwt.AccountClaims, m *Manifest) error {
	seed, err := os.ReadFile(filepath.Join(dir, FileOperatorSeed))
	if err != nil {
		return err
	}
	op, err := nkeys.FromSeed(seed)
	if err != nil {
		return err
	}
	accJWT, err := ac.Encode(op)
	if err != nil {
		return err
	}
	opJWT, _ := os.ReadFile(filepath.Join(dir, FileOperatorJWT))
	sysJWT, _ := os.ReadFile(filepath.Join(dir, FileSystemJWT))
	mj, _ := json.Marshal(m)
	for name, data := range map[string][]byte{
		FileAccountJWT: []byte(accJWT + "\n"),
		FileServerConf: serverConf(strings.TrimSpace(string(opJWT)), m.SystemAccount,
			[]preload{{AccountName, m.Account, accJWT}, {SystemAccountName, m.SystemAccount, strings.TrimSpace(string(sysJWT))}}),
		FileManifest: mj,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// An auth dir an older fedmesh made is brought to the current role
// permissions: the same operator, accounts and keys, so a credential
// issued before gets the new deny once the server runs the new config.
func TestAuthUpgrade(t *testing.T) {
	dir, fresh := initDir(t)
	d, err := Open(dir)
	require.NoError(t, err)
	assert.Empty(t, d.Outdated(), "a dir init just made")
	before, err := os.ReadFile(filepath.Join(dir, FileAccountJWT))
	require.NoError(t, err)
	changed, err := Upgrade(dir)
	require.NoError(t, err)
	assert.Empty(t, changed)
	after, err := os.ReadFile(filepath.Join(dir, FileAccountJWT))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "a current dir is not rewritten")

	makeOld(t, dir)
	d, err = Open(dir)
	require.NoError(t, err)
	want := []string{"admin", RoleClient, NodeKey(wire.PrivacyRestricted)}
	assert.Equal(t, want, d.Outdated())
	// a client of the old dir, on a server of the old dir, may publish what
	// the router reads as a request of any tenant
	oldClient, err := d.Issue(User{Role: RoleClient, Tenant: "acme"})
	require.NoError(t, err)
	_, err = d.Issue(User{Role: RoleNode, NodeID: "n1", Region: "eu", Clearance: wire.PrivacyRestricted})
	require.Error(t, err, "no key for restricted nodes yet")
	s := natsembed.StartOperatorForTest(t, dir)
	nc, viol, err := connect(t, s.ClientURL(), oldClient, "_INBOX.acme")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("fed.infer.custom.acme", nil))
	require.NoError(t, nc.Publish("sentinel", nil))
	assert.Equal(t, "publish sentinel", waitViolation(t, viol), "the old template allows fed.infer.custom.acme")
	s.Shutdown()

	changed, err = Upgrade(dir)
	require.NoError(t, err)
	assert.Equal(t, want, changed)
	d, err = Open(dir)
	require.NoError(t, err)
	assert.Empty(t, d.Outdated())
	m, err := readManifest(dir)
	require.NoError(t, err)
	assert.Equal(t, fresh.Operator, m.Operator)
	assert.Equal(t, fresh.Account, m.Account)
	assert.Equal(t, fresh.SystemAccount, m.SystemAccount)
	assert.NotContains(t, m.SigningKeys, "admin")
	for k, pub := range fresh.SigningKeys {
		if k != NodeKey(wire.PrivacyRestricted) {
			assert.Equal(t, pub, m.SigningKeys[k], "key %s kept", k)
		}
	}
	assert.Len(t, d.account.SigningKeys, len(Perms("")), "the gone role's key is no longer the account's")
	for pub := range d.account.SigningKeys {
		sc, _ := d.account.SigningKeys.GetScope(pub)
		assert.NotEqual(t, "admin", sc.(*jwt.UserScope).Role)
	}
	again, err := Upgrade(dir)
	require.NoError(t, err)
	assert.Empty(t, again, "an upgraded dir is current")

	// the server of the new config denies the same credential
	s = natsembed.StartOperatorForTest(t, dir)
	nc, viol, err = connect(t, s.ClientURL(), oldClient, "_INBOX.acme")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("fed.infer.custom.acme", nil))
	assert.Equal(t, "publish fed.infer.custom.acme", waitViolation(t, viol))
	node, err := d.Issue(User{Role: RoleNode, NodeID: "n1", Region: "eu", Clearance: wire.PrivacyRestricted})
	require.NoError(t, err, "the new key issues")
	nn, nviol, err := connect(t, s.ClientURL(), node, "_INBOX.node.n1")
	require.NoError(t, err)
	_, err = nn.SubscribeSync("fed.node.n1.infer.restricted")
	require.NoError(t, err)
	require.NoError(t, nn.Publish("sentinel", nil))
	assert.Equal(t, "publish sentinel", waitViolation(t, nviol), "a restricted node may subscribe to its restricted dispatch")

	// without the operator key nothing is re-signed
	makeOld(t, dir)
	require.NoError(t, os.Remove(filepath.Join(dir, FileOperatorSeed)))
	_, err = Upgrade(dir)
	assert.ErrorContains(t, err, "operator key")
}
