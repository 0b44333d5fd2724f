package auth

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func initDir(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "auth")
	created, err := Init(dir, "")
	require.NoError(t, err)
	require.True(t, created)
	m, err := readManifest(dir)
	require.NoError(t, err)
	return dir, m
}

func TestAuthInitFiles(t *testing.T) {
	dir, m := initDir(t)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	st, err = os.Stat(filepath.Join(dir, DirKeys))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())

	// Each seed is 0600 and is the key the JWTs and the manifest name.
	seedOf := func(name string) nkeys.KeyPair {
		t.Helper()
		path := filepath.Join(dir, name)
		st, err := os.Stat(path)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), name)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		kp, err := nkeys.FromSeed(data)
		require.NoError(t, err, name)
		return kp
	}
	pub := func(kp nkeys.KeyPair) string { p, _ := kp.PublicKey(); return p }
	readJWT := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return strings.TrimSpace(string(data))
	}
	assert.Equal(t, m.Operator, pub(seedOf(FileOperatorSeed)))
	assert.Equal(t, m.Account, pub(seedOf(FileAccountSeed)))
	assert.Equal(t, m.SystemAccount, pub(seedOf(FileSystemSeed)))

	oc, err := jwt.DecodeOperatorClaims(readJWT(FileOperatorJWT))
	require.NoError(t, err)
	assert.Equal(t, m.Operator, oc.Subject)
	assert.Equal(t, m.SystemAccount, oc.SystemAccount)

	ac, err := jwt.DecodeAccountClaims(readJWT(FileAccountJWT))
	require.NoError(t, err)
	assert.Equal(t, AccountName, ac.Name)
	assert.Equal(t, m.Operator, ac.Issuer)
	assert.True(t, ac.Limits.IsJSEnabled())
	assert.True(t, ac.Limits.JetStreamLimits.IsUnlimited())
	assert.Equal(t, jwt.StringList{">"}, ac.DefaultPermissions.Pub.Deny, "users without permissions may publish nothing")
	assert.Equal(t, jwt.StringList{">"}, ac.DefaultPermissions.Sub.Deny)

	perms := Perms("")
	require.Len(t, m.SigningKeys, len(perms))
	for _, p := range perms {
		kp := seedOf(filepath.Join(DirKeys, p.Key+".nk"))
		assert.Equal(t, m.SigningKeys[p.Key], pub(kp), p.Key)
		sc, ok := ac.SigningKeys.GetScope(pub(kp))
		require.True(t, ok, p.Key)
		us := sc.(*jwt.UserScope)
		assert.Equal(t, p.Key, us.Role)
		assert.ElementsMatch(t, p.Pub, us.Template.Pub.Allow, p.Key)
		assert.ElementsMatch(t, p.Sub, us.Template.Sub.Allow, p.Key)
		assert.Nil(t, us.Template.Resp, "%s: no allow_responses", p.Key)
	}

	sc, err := jwt.DecodeAccountClaims(readJWT(FileSystemJWT))
	require.NoError(t, err)
	assert.Equal(t, m.SystemAccount, sc.Subject)
	assert.False(t, sc.Limits.IsJSEnabled())

	conf, err := os.ReadFile(filepath.Join(dir, FileServerConf))
	require.NoError(t, err)
	for _, want := range []string{readJWT(FileOperatorJWT), readJWT(FileAccountJWT), readJWT(FileSystemJWT), m.SystemAccount, "resolver: MEMORY"} {
		assert.Contains(t, string(conf), want)
	}
	seeds, err := filepath.Glob(filepath.Join(dir, "*.nk"))
	require.NoError(t, err)
	keys, err := filepath.Glob(filepath.Join(dir, DirKeys, "*.nk"))
	require.NoError(t, err)
	require.Len(t, append(seeds, keys...), 3+len(perms))
	for _, f := range append(seeds, keys...) {
		seed, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.NotContains(t, string(conf), string(seed), "a seed in server.conf")
	}
}

func TestAuthInitIdempotentAndRefusals(t *testing.T) {
	dir, m := initDir(t)
	snapshot := func() map[string]string {
		out := map[string]string{}
		require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			out[p] = string(data)
			return err
		}))
		return out
	}
	before := snapshot()
	created, err := Init(dir, "fed")
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, before, snapshot())

	_, err = Init(dir, "other")
	assert.ErrorContains(t, err, `prefix "fed", not "other"`)

	busy := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(busy, FileAccountJWT), []byte("x"), 0o600))
	_, err = Init(busy, "")
	assert.ErrorContains(t, err, "not empty")

	// An existing empty dir is used, and tightened to 0700.
	empty := t.TempDir()
	require.NoError(t, os.Chmod(empty, 0o755))
	created, err = Init(empty, "mesh")
	require.NoError(t, err)
	assert.True(t, created)
	st, err := os.Stat(empty)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	m2, err := readManifest(empty)
	require.NoError(t, err)
	assert.Equal(t, "mesh", m2.Prefix)
	assert.NotEqual(t, m.Operator, m2.Operator, "a new operator each init")
}

func decodeCreds(t *testing.T, creds []byte) (*jwt.UserClaims, string) {
	t.Helper()
	token, err := jwt.ParseDecoratedJWT(creds)
	require.NoError(t, err)
	uc, err := jwt.DecodeUserClaims(token)
	require.NoError(t, err)
	kp, err := jwt.ParseDecoratedUserNKey(creds)
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	return uc, pub
}

func TestAuthIssueClaims(t *testing.T) {
	dir, m := initDir(t)
	d, err := Open(dir)
	require.NoError(t, err)
	assert.Equal(t, m.Account, d.Account())
	cases := []struct {
		u    User
		name string
		key  string
		tags []string
	}{
		{User{Role: RoleClient, Tenant: "acme"}, "client-acme", "client", []string{"role:client", "tenant:acme"}},
		{User{Role: RoleGateway}, `gateway-[0-9a-f]{8}`, "gateway", []string{"role:gateway"}},
		{User{Role: RoleRouter, Name: "router-eu"}, "router-eu", "router", []string{"role:router"}},
		{User{Role: RoleCatalog}, `catalog-[0-9a-f]{8}`, "catalog", []string{"role:catalog"}},
		{User{Role: RoleHealth, Name: "health-1"}, "health-1", "health", []string{"role:health"}},
		{User{Role: RoleOperator}, "operator", "operator", []string{"role:operator"}},
		{User{Role: RoleNode, NodeID: "eu-gpu-1", Region: "eu-west", Clearance: wire.PrivacyConfidential}, "eu-gpu-1",
			"node-confidential", []string{"role:node", "region:eu-west", "clearance:confidential"}},
		{User{Role: RoleNode, NodeID: "Edge_7", Region: "ap", Clearance: wire.PrivacyPublic}, "Edge_7",
			"node-public", []string{"role:node", "region:ap", "clearance:public"}},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		creds, err := d.Issue(tc.u)
		require.NoError(t, err, tc.name)
		uc, seedPub := decodeCreds(t, creds)
		assert.Equal(t, uc.Subject, seedPub, "%s: the seed is the user's", tc.name)
		assert.False(t, seen[uc.Subject], "a new user key each time")
		seen[uc.Subject] = true
		assert.Regexp(t, "^"+tc.name+"$", uc.Name)
		assert.ElementsMatch(t, tc.tags, []string(uc.Tags), tc.name)
		assert.Equal(t, m.SigningKeys[tc.key], uc.Issuer, "%s issued by %s", tc.name, tc.key)
		assert.Equal(t, m.Account, uc.IssuerAccount)
		assert.True(t, uc.HasEmptyPermissions(), "%s: permissions come from the key's template", tc.name)
		assert.Zero(t, uc.Expires)
	}
}

func TestAuthIssueNeedsOnlyItsKey(t *testing.T) {
	dir, _ := initDir(t)
	// A dir with the account JWT, the manifest and one role's key.
	small := t.TempDir()
	for _, f := range []string{FileManifest, FileAccountJWT, filepath.Join(DirKeys, "gateway.nk")} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(small, f)), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(small, f), data, 0o600))
	}
	d, err := Open(small)
	require.NoError(t, err)
	_, err = d.Issue(User{Role: RoleGateway})
	assert.NoError(t, err)
	_, err = d.Issue(User{Role: RoleOperator})
	assert.ErrorIs(t, err, os.ErrNotExist)

	// A key file that is not the account's key for that role is refused.
	d, err = Open(dir)
	require.NoError(t, err)
	pubKey, err := os.ReadFile(filepath.Join(dir, DirKeys, NodeKey(wire.PrivacyPublic)+".nk"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, DirKeys, NodeKey(wire.PrivacyRestricted)+".nk"), pubKey, 0o600))
	_, err = d.Issue(User{Role: RoleNode, NodeID: "n1", Region: "eu", Clearance: wire.PrivacyRestricted})
	assert.ErrorContains(t, err, "inconsistent")

	_, err = Open(t.TempDir())
	assert.ErrorIs(t, err, ErrNotAuthDir)
}

var violationRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// connect connects with creds and returns the subjects of the violations
// the server reports.
func connect(t *testing.T, url string, creds []byte, inbox string) (*nats.Conn, chan string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "u.creds")
	require.NoError(t, WriteFile(path, creds))
	viol := make(chan string, 64)
	nc, err := nats.Connect(url, nats.UserCredentials(path), nats.CustomInboxPrefix(inbox), nats.MaxReconnects(0),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if v := violationRe.FindStringSubmatch(err.Error()); v != nil {
				viol <- strings.ToLower(v[1]) + " " + v[2]
			}
		}))
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, viol, err
}

// userJWT signs a user by hand: what a holder of a key could mint.
func userJWT(t *testing.T, signer nkeys.KeyPair, account string, edit func(*jwt.UserClaims)) []byte {
	t.Helper()
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = "minted"
	uc.IssuerAccount = account
	edit(uc)
	token, err := uc.Encode(signer)
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(token, seed)
	require.NoError(t, err)
	return creds
}

// What the CLI's checks refuse is also refused by the server, for users a
// key holder mints by hand.
func TestAuthTemplatesHoldForMintedUsers(t *testing.T) {
	dir, m := initDir(t)
	d, err := Open(dir)
	require.NoError(t, err)
	s := natsembed.StartOperatorForTest(t, dir)
	clientKey, err := d.SigningKey(RoleClient)
	require.NoError(t, err)

	// A tenant named like a service still gets no service inbox.
	creds := userJWT(t, clientKey, m.Account, func(uc *jwt.UserClaims) {
		uc.Tags.Add("tenant:router")
		uc.SetScoped(true)
	})
	nc, viol, err := connect(t, s.ClientURL(), creds, "_INBOX.router")
	require.NoError(t, err)
	_, err = nc.SubscribeSync("_INBOX.router.>")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	assert.Equal(t, "subscription _INBOX.router.>", waitViolation(t, viol))

	// No tenant tag: the server cannot expand the client's templated deny
	// (fed.infer.custom.<tenant>), and dropping a deny would widen what
	// is allowed, so it refuses the user outright.
	creds = userJWT(t, clientKey, m.Account, func(uc *jwt.UserClaims) { uc.SetScoped(true) })
	_, _, err = connect(t, s.ClientURL(), creds, "_INBOX.x")
	require.Error(t, err, "a client without a tenant connected")
	assert.Contains(t, strings.ToLower(err.Error()), "authorization")

	// A scoped key's user may not carry permissions of its own.
	creds = userJWT(t, clientKey, m.Account, func(uc *jwt.UserClaims) {
		uc.Tags.Add("tenant:acme")
		uc.Pub.Allow.Add(">")
	})
	_, _, err = connect(t, s.ClientURL(), creds, "_INBOX.acme")
	assert.True(t, errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization"), "got %v", err)

	// A user the account's identity key signs without permissions gets the
	// account's default: nothing.
	accKey, err := os.ReadFile(filepath.Join(dir, FileAccountSeed))
	require.NoError(t, err)
	acc, err := nkeys.FromSeed(accKey)
	require.NoError(t, err)
	creds = userJWT(t, acc, "", func(*jwt.UserClaims) {})
	nc, viol, err = connect(t, s.ClientURL(), creds, "_INBOX")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("fed.infer.generate.acme", nil))
	assert.Equal(t, "publish fed.infer.generate.acme", waitViolation(t, viol))
}

func waitViolation(t *testing.T, viol chan string) string {
	t.Helper()
	select {
	case v := <-viol:
		return v
	case <-time.After(natsembed.WaitFor):
		t.Fatal("no permissions violation")
		return ""
	}
}

func TestAuthUserCheck(t *testing.T) {
	cases := []struct {
		u    User
		want string // "" = valid
	}{
		{User{Role: RoleClient, Tenant: "acme-1"}, ""},
		{User{Role: RoleClient, Tenant: ""}, "tenant is empty"},
		{User{Role: RoleClient, Tenant: "ACME"}, "lowercase"},
		{User{Role: RoleClient, Tenant: "a.b"}, "only letters"},
		{User{Role: RoleClient, Tenant: strings.Repeat("a", 129)}, "longer than"},
		{User{Role: RoleClient, Tenant: "gateway"}, "reserved"},
		{User{Role: RoleClient, Tenant: "operator"}, "reserved"},
		{User{Role: RoleNode, NodeID: "n", Region: "eu", Clearance: wire.PrivacyRestricted}, ""},
		{User{Role: RoleNode, NodeID: "n", Region: "eu", Clearance: wire.Privacy(4)}, "invalid clearance"},
		{User{Role: RoleNode, NodeID: "n>", Region: "eu"}, "only letters"},
		{User{Role: RoleNode, NodeID: "n", Region: "Eu"}, "lowercase"},
		{User{Role: RoleNode, NodeID: "n", Region: "eu", Name: "x"}, "--node-id"},
		{User{Role: RoleNode, NodeID: "n", Region: "eu", Tenant: "t"}, "for role client"},
		{User{Role: RoleRouter, NodeID: "n"}, "for role node"},
		{User{Role: RoleRouter, Name: "r 1"}, "only letters"},
		{User{Role: "root"}, "unknown role"},
	}
	for _, tc := range cases {
		err := tc.u.Check()
		if tc.want == "" {
			assert.NoError(t, err, "%+v", tc.u)
		} else {
			assert.ErrorContains(t, err, tc.want, "%+v", tc.u)
		}
	}
}

// The table's shape: what makes the denials hold, checked on the data.
func TestAuthPermsShape(t *testing.T) {
	perms := Perms("fed")
	byKey := map[string]Perm{}
	for _, p := range perms {
		byKey[p.Key] = p
	}
	require.Len(t, byKey, len(perms), "one permission set per key")
	for _, c := range Levels {
		p := byKey[NodeKey(c)]
		for _, l := range Levels {
			s := "fed.node.{{name()}}.infer." + l.String()
			assert.Equal(t, l <= c, slices.Contains(p.Sub, s), "%s sub %s", p.Key, s)
		}
		assert.Contains(t, p.Pub, "fed.catalog.register.{{name()}}.{{tag(region)}}."+c.String())
	}
	for _, p := range perms {
		if p.Role == RoleOperator {
			continue
		}
		for _, s := range append(append([]string{}, p.Pub...), p.Sub...) {
			assert.NotEqual(t, ">", s, p.Key)
			assert.False(t, strings.HasPrefix(s, "$JS.API.STREAM.CREATE") || strings.HasPrefix(s, "$JS.API.>") ||
				strings.HasPrefix(s, "$KV.fed_config"), "%s may %s", p.Key, s)
		}
	}
	data, err := json.Marshal(perms)
	require.NoError(t, err)
	assert.NotContains(t, string(data), "fed.fed.")
	assert.Contains(t, Table(Perms("mesh")), "`mesh.infer.*.{{tag(tenant)}}`")
}
