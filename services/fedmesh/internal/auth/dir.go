package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// Names of the entities init creates.
const (
	OperatorName      = "fedmesh"
	AccountName       = "FEDMESH"
	SystemAccountName = "SYS"
)

// Files of an auth dir. Seeds (*.nk) are 0600, the dirs 0700.
const (
	FileServerConf   = "server.conf"       // nats-server config: operator, system_account, resolver MEMORY, preload
	FileManifest     = "fedmesh-auth.json" // written last: marks a complete auth dir
	FileOperatorSeed = "operator.nk"
	FileOperatorJWT  = "operator.jwt"
	FileAccountSeed  = "account.nk" // FEDMESH's identity key: only for re-signing the account
	FileAccountJWT   = "account.jwt"
	FileSystemSeed   = "sys.nk"
	FileSystemJWT    = "sys.jwt"
	DirKeys          = "keys" // keys/<key>.nk: the scoped signing keys, one per Perm
)

// Manifest is FileManifest: what init made, to recognise the dir later.
type Manifest struct {
	Version       int               `json:"version"`
	Prefix        string            `json:"prefix"`
	Operator      string            `json:"operator"`
	Account       string            `json:"account"`
	SystemAccount string            `json:"system_account"`
	SigningKeys   map[string]string `json:"signing_keys"` // key name → public key
}

const manifestVersion = 1

// ErrNotAuthDir: the dir is not (or not completely) an auth dir.
var ErrNotAuthDir = errors.New("not a fedmesh auth dir")

// outdated compares ac's scoped signing keys with Perms(m.Prefix).
func outdated(ac *jwt.AccountClaims, m *Manifest) []string {
	var keys []string
	want := map[string]bool{}
	for _, p := range Perms(m.Prefix) {
		want[p.Key] = true
		pub, ok := m.SigningKeys[p.Key]
		if !ok {
			keys = append(keys, p.Key)
			continue
		}
		sc, ok := ac.SigningKeys.GetScope(pub)
		if us, scoped := sc.(*jwt.UserScope); !ok || !scoped || !sameScope(us, scope(pub, p)) {
			keys = append(keys, p.Key)
		}
	}
	for k := range m.SigningKeys {
		if !want[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// sameScope: a and b grant the same, by their JSON form (the one the
// account JWT carries).
func sameScope(a, b *jwt.UserScope) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

// Upgrade brings the role permissions of the auth dir at dir to this
// fedmesh's: it re-signs the account JWT with the operator key (keys of
// changed roles get their current template, new roles a new key, keys of
// roles that are gone are removed) and rewrites server.conf and the
// manifest. The operator, the accounts and every signing key that stays
// are kept, so credentials issued before keep working and get the new
// permissions once nats-server runs the new server.conf (restart or
// reload it). It returns the keys it changed; nil when dir was current
// (nothing is written then).
func Upgrade(dir string) ([]string, error) {
	d, err := Open(dir)
	if err != nil {
		return nil, fmt.Errorf("auth upgrade: %w", err)
	}
	changed := d.Outdated()
	if len(changed) == 0 {
		return nil, nil
	}
	if err := upgradeFiles(dir, d.account, d.manifest); err != nil {
		return nil, fmt.Errorf("auth upgrade %s: %w", dir, err)
	}
	return changed, nil
}

func upgradeFiles(dir string, ac *jwt.AccountClaims, m *Manifest) error {
	seed, err := os.ReadFile(filepath.Join(dir, FileOperatorSeed))
	if err != nil {
		return fmt.Errorf("the operator key signs the account: %w", err)
	}
	op, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		return fmt.Errorf("%s: %w", FileOperatorSeed, err)
	}
	if pub, _ := op.PublicKey(); pub != m.Operator || ac.Issuer != m.Operator {
		return fmt.Errorf("%s is not the operator of %s", FileOperatorSeed, FileAccountJWT)
	}
	read := func(name string) (string, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(data)), err
	}
	opJWT, err := read(FileOperatorJWT)
	if err != nil {
		return err
	}
	sysJWT, err := read(FileSystemJWT)
	if err != nil {
		return err
	}
	var files []file
	want := map[string]bool{}
	for _, p := range Perms(m.Prefix) {
		want[p.Key] = true
		pub, ok := m.SigningKeys[p.Key]
		if !ok { // a role this fedmesh added
			kp, err := nkeys.CreateAccount()
			if err != nil {
				return err
			}
			pub, _ = kp.PublicKey()
			s, _ := kp.Seed()
			m.SigningKeys[p.Key] = pub
			files = append(files, file{filepath.Join(DirKeys, p.Key+".nk"), s, 0o600})
		}
		ac.SigningKeys.AddScopedSigner(scope(pub, p)) // replaces the old template
	}
	for k, pub := range m.SigningKeys {
		if !want[k] { // a role that is gone: its users may do nothing
			delete(ac.SigningKeys, pub)
			delete(m.SigningKeys, k)
		}
	}
	accJWT, err := ac.Encode(op)
	if err != nil {
		return fmt.Errorf("account jwt: %w", err)
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	// new keys first, the manifest last: a reader never finds a key the
	// account does not know
	files = append(files,
		file{FileAccountJWT, []byte(accJWT + "\n"), 0o644},
		file{FileServerConf, serverConf(opJWT, m.SystemAccount, []preload{{AccountName, m.Account, accJWT}, {SystemAccountName, m.SystemAccount, sysJWT}}), 0o644},
		file{FileManifest, append(mj, '\n'), 0o644})
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// Init makes a new operator, account, system account and signing keys in
// dir, and dir/server.conf. A dir that already holds them is left as it is
// (created false; Upgrade brings its permissions up to date); any other
// non-empty dir is refused. prefix is the
// subject prefix the permission templates use ("" = "fed").
func Init(dir, prefix string) (created bool, err error) {
	if prefix == "" {
		prefix = "fed"
	}
	if m, err := readManifest(dir); err == nil {
		if m.Prefix != prefix {
			return false, fmt.Errorf("auth init: %s is an auth dir for subject prefix %q, not %q", dir, m.Prefix, prefix)
		}
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("auth init: %w", err)
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("auth init: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("auth init: %w", err)
	case len(entries) > 0:
		return false, fmt.Errorf("auth init: %s is not empty and is not a fedmesh auth dir (no %s)", dir, FileManifest)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return false, fmt.Errorf("auth init: %w", err)
	}
	if err := initFiles(dir, prefix); err != nil {
		// Leave an empty dir, not half the keys of an operator.
		cleanup(dir)
		return false, fmt.Errorf("auth init %s: %w", dir, err)
	}
	return true, nil
}

func cleanup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

func initFiles(dir, prefix string) error {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return err
	}
	opPub, _ := op.PublicKey()
	sys, sysPub, err := newAccount()
	if err != nil {
		return err
	}
	acc, accPub, err := newAccount()
	if err != nil {
		return err
	}

	// Operator.
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = OperatorName
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(op)
	if err != nil {
		return fmt.Errorf("operator jwt: %w", err)
	}

	// System account: no JetStream, no users issued by fedmesh.
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = SystemAccountName
	sysJWT, err := sc.Encode(op)
	if err != nil {
		return fmt.Errorf("system account jwt: %w", err)
	}

	// FEDMESH: JetStream unlimited, one scoped signing key per Perm, and
	// users without permissions (signed by the identity key) may do nothing.
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit,
	}
	ac.DefaultPermissions.Pub.Deny.Add(">")
	ac.DefaultPermissions.Sub.Deny.Add(">")
	m := Manifest{Version: manifestVersion, Prefix: prefix, Operator: opPub, Account: accPub, SystemAccount: sysPub,
		SigningKeys: map[string]string{}}
	keySeeds := map[string][]byte{}
	for _, p := range Perms(prefix) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return err
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		keySeeds[p.Key] = seed
		m.SigningKeys[p.Key] = pub
		ac.SigningKeys.AddScopedSigner(scope(pub, p))
	}
	accJWT, err := ac.Encode(op)
	if err != nil {
		return fmt.Errorf("account jwt: %w", err)
	}

	opSeed, _ := op.Seed()
	accSeed, _ := acc.Seed()
	sysSeed, _ := sys.Seed()
	files := []file{
		{FileOperatorSeed, opSeed, 0o600},
		{FileOperatorJWT, []byte(opJWT + "\n"), 0o644},
		{FileAccountSeed, accSeed, 0o600},
		{FileAccountJWT, []byte(accJWT + "\n"), 0o644},
		{FileSystemSeed, sysSeed, 0o600},
		{FileSystemJWT, []byte(sysJWT + "\n"), 0o644},
	}
	if err := os.Mkdir(filepath.Join(dir, DirKeys), 0o700); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(keySeeds)) {
		files = append(files, file{filepath.Join(DirKeys, k+".nk"), keySeeds[k], 0o600})
	}
	files = append(files, file{FileServerConf, serverConf(opJWT, sysPub, []preload{{AccountName, accPub, accJWT}, {SystemAccountName, sysPub, sysJWT}}), 0o644})
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	files = append(files, file{FileManifest, append(mj, '\n'), 0o644})
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// file is one file init writes.
type file struct {
	name string
	data []byte
	mode os.FileMode
}

func newAccount() (nkeys.KeyPair, string, error) {
	kp, err := nkeys.CreateAccount()
	if err != nil {
		return nil, "", err
	}
	pub, err := kp.PublicKey()
	return kp, pub, err
}

// scope is the scoped signer of p: its template is the whole permission set.
func scope(pub string, p Perm) *jwt.UserScope {
	s := jwt.NewUserScope()
	s.Key = pub
	s.Role = p.Key
	s.Description = "fedmesh " + p.Role + " users"
	s.Template.Pub.Allow.Add(p.Pub...)
	s.Template.Pub.Deny.Add(p.PubDeny...)
	s.Template.Sub.Allow.Add(p.Sub...)
	s.Template.Sub.Deny.Add(p.SubDeny...)
	return s
}

type preload struct{ name, pub, jwt string }

// serverConf is the config snippet nats-server needs to trust the operator
// and know the accounts without an account server.
func serverConf(opJWT, sysPub string, accounts []preload) []byte {
	var b strings.Builder
	b.WriteString("# fedmesh NATS auth (operator mode), written by `fedmesh auth init`.\n")
	b.WriteString("# Include it from the server config that enables JetStream, e.g.\n")
	b.WriteString("#   jetstream { store_dir: /var/lib/nats }\n#   include ./server.conf\n")
	fmt.Fprintf(&b, "operator: %q\n", opJWT)
	fmt.Fprintf(&b, "system_account: %q\n", sysPub)
	b.WriteString("resolver: MEMORY\nresolver_preload: {\n")
	for _, a := range accounts {
		fmt.Fprintf(&b, "  # %s\n  %s: %q\n", a.name, a.pub, a.jwt)
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// writeFile writes data to path with mode, through a temporary file, so a
// reader never sees half a key and an existing file gets mode too.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile writes data to path, mode 0600 (a .creds file).
func WriteFile(path string, data []byte) error {
	if err := writeFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func readManifest(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileManifest))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: %s: %w", dir, ErrNotAuthDir, FileManifest, err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("%s: %s version %d, this fedmesh reads %d", dir, FileManifest, m.Version, manifestVersion)
	}
	return &m, nil
}
