package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Dir is an auth dir opened for issuing users. Issuing needs only the
// account JWT and the one signing key of the role (keys/<key>.nk): a dir
// holding just those can mint that role and nothing else.
type Dir struct {
	path     string
	account  *jwt.AccountClaims
	manifest *Manifest
}

// Open reads dir's account JWT.
func Open(dir string) (*Dir, error) {
	m, err := readManifest(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w (run `fedmesh auth init %s` first)", dir, ErrNotAuthDir, dir)
		}
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, FileAccountJWT))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", dir, ErrNotAuthDir, err)
	}
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", dir, FileAccountJWT, err)
	}
	return &Dir{path: dir, account: ac, manifest: m}, nil
}

// Outdated lists the signing keys whose permissions in d's account JWT are
// not the ones this fedmesh gives their role (changed, missing, or of a
// role that is gone), sorted; nil when the account is current. An auth
// dir made by an older `auth init` lacks newer permissions (a deny added
// since, say) until Upgrade re-signs it.
func (d *Dir) Outdated() []string {
	return outdated(d.account, d.manifest)
}

// Account is the public key of the FEDMESH account.
func (d *Dir) Account() string { return d.account.Subject }

// User is what to issue.
type User struct {
	Role string
	// Name is the user JWT's name; "" = role-based default (a service:
	// <role>-<8 random hex digits>, so that no two instances share an
	// inbox). Nodes are always named by NodeID. Services and nodes read
	// only the inbox their name gives them ({{name()}} in the templates).
	Name string
	// Tenant of a client.
	Tenant string
	// NodeID, Region and Clearance of a node.
	NodeID    string
	Region    string
	Clearance wire.Privacy
}

// Check validates u for its role: ids by the wire id rule, values read by
// templates lowercase, nothing given that the role does not use.
func (u User) Check() error {
	if !slices.Contains(RoleNames, u.Role) {
		return fmt.Errorf("unknown role %q (want one of %s)", u.Role, strings.Join(RoleNames, ", "))
	}
	if u.Name != "" {
		if u.Role == RoleNode {
			return errors.New("a node's name is its --node-id (its permissions are templated on the name)")
		}
		if err := wire.ValidateID("name", u.Name); err != nil {
			return err
		}
	}
	if u.Role != RoleClient && u.Tenant != "" {
		return fmt.Errorf("a tenant is for role %s, not %s", RoleClient, u.Role)
	}
	if u.Role != RoleNode && (u.NodeID != "" || u.Region != "") {
		return fmt.Errorf("a node id and region are for role %s, not %s", RoleNode, u.Role)
	}
	switch u.Role {
	case RoleClient:
		if err := tagValue(TagTenant, u.Tenant); err != nil {
			return err
		}
		if slices.Contains(serviceInboxes, u.Tenant) || slices.Contains(RoleNames, u.Tenant) {
			return fmt.Errorf("tenant %q is reserved: its inbox %s would be a service's", u.Tenant, InboxPrefix(RoleClient, u.Tenant))
		}
	case RoleNode:
		if err := wire.ValidateID("node_id", u.NodeID); err != nil {
			return err
		}
		if err := tagValue(TagRegion, u.Region); err != nil {
			return err
		}
		if int(u.Clearance) >= len(Levels) {
			return fmt.Errorf("invalid clearance %s", u.Clearance)
		}
	}
	return nil
}

// tagValue checks a value a template reads from a tag: NATS lowercases
// tags, so "EU" would be granted "eu" subjects.
func tagValue(kind, v string) error {
	if err := wire.ValidateID(kind, v); err != nil {
		return err
	}
	if v != strings.ToLower(v) {
		return fmt.Errorf("%s %q must be lowercase (NATS lowercases JWT tags, which its permissions are templated on)", kind, v)
	}
	return nil
}

// key is the signing key that issues u.
func (u User) key() string {
	if u.Role == RoleNode {
		return NodeKey(u.Clearance)
	}
	return u.Role
}

// name is the user JWT's name.
func (u User) name() string {
	switch {
	case u.Role == RoleNode:
		return u.NodeID
	case u.Name != "":
		return u.Name
	case u.Role == RoleClient:
		return RoleClient + "-" + u.Tenant
	case u.Role == RoleOperator:
		return RoleOperator
	}
	// a service: a name of its own, its inbox _INBOX.<role>.<name> too
	var b [4]byte
	_, _ = rand.Read(b[:])
	return u.Role + "-" + hex.EncodeToString(b[:])
}

// CredsName is the user JWT name of a .creds file Issue made (the one its
// holder's inbox is named by).
func CredsName(creds []byte) (string, error) {
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return "", err
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", err
	}
	return uc.Name, nil
}

func (u User) tags() []string {
	t := []string{TagRole + ":" + u.Role}
	switch u.Role {
	case RoleClient:
		t = append(t, TagTenant+":"+u.Tenant)
	case RoleNode:
		t = append(t, TagRegion+":"+u.Region, TagClearance+":"+u.Clearance.String())
	}
	return t
}

// SigningKey loads the scoped signing key of key and checks that the
// account JWT has it with that role.
func (d *Dir) SigningKey(key string) (nkeys.KeyPair, error) {
	path := filepath.Join(d.path, DirKeys, key+".nk")
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", key, err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %s: %w", key, path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", key, err)
	}
	sc, ok := d.account.SigningKeys.GetScope(pub)
	us, scoped := sc.(*jwt.UserScope)
	if !ok || !scoped || us.Role != key {
		return nil, fmt.Errorf("signing key %s (%s) is not the account's scoped key for %q: the auth dir is inconsistent", key, pub, key)
	}
	return kp, nil
}

// Issue makes a new user key and its JWT, signed by the role's scoped key,
// and returns the .creds file (jwt.FormatUserConfig).
func (d *Dir) Issue(u User) ([]byte, error) {
	if err := u.Check(); err != nil {
		return nil, err
	}
	signer, err := d.SigningKey(u.key())
	if err != nil {
		return nil, err
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = u.name()
	uc.IssuerAccount = d.account.Subject
	uc.Tags.Add(u.tags()...)
	// A scoped user carries no permissions or limits: they come from the
	// signing key's template.
	uc.SetScoped(true)
	token, err := uc.Encode(signer)
	if err != nil {
		return nil, fmt.Errorf("issue %s %s: %w", u.Role, uc.Name, err)
	}
	return jwt.FormatUserConfig(token, seed)
}

// ConnOption issues u and returns the NATS option that connects as it,
// without a file (fedmesh dev --secure gives every part its own user).
func (d *Dir) ConnOption(u User) (nats.Option, error) {
	creds, err := d.Issue(u)
	if err != nil {
		return nil, err
	}
	token, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		return nil, fmt.Errorf("issued %s: %w", u.Role, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(creds)
	if err != nil {
		return nil, fmt.Errorf("issued %s: %w", u.Role, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("issued %s: %w", u.Role, err)
	}
	return nats.UserJWTAndSeed(token, string(seed)), nil
}
