package gateway

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// keysFile is the schema of a keys file (YAML, or JSON which YAML reads too):
//
//	keys:
//	  - key: sk-acme-1
//	    tenant: acme
//	    privacy: confidential
//	    regions: [eu-west-1, eu-central-1]
//	    requests_per_second: 10
//	    burst: 20
type keysFile struct {
	Keys []keyEntry `yaml:"keys"`
}

type keyEntry struct {
	Key    string `yaml:"key"`
	Tenant `yaml:",inline"`
}

// LoadKeys reads a keys file (YAML or JSON, schema above).
func LoadKeys(path string) (map[string]Tenant, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway keys: %w", err)
	}
	keys, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("gateway keys %s: %w", path, err)
	}
	return keys, nil
}

// ParseKeys decodes a keys document. Unknown fields, duplicate or empty keys
// and invalid tenants are errors: a typo must not silently widen access.
func ParseKeys(b []byte) (map[string]Tenant, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f keysFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode: %w", err)
	}
	keys := make(map[string]Tenant, len(f.Keys))
	for i, e := range f.Keys {
		if e.Key == "" {
			return nil, fmt.Errorf("keys[%d]: key is empty", i)
		}
		if _, dup := keys[e.Key]; dup {
			return nil, fmt.Errorf("keys[%d]: key %s appears twice", i, redact(e.Key))
		}
		if err := e.Tenant.validate(); err != nil {
			return nil, fmt.Errorf("keys[%d] (%s): %w", i, redact(e.Key), err)
		}
		keys[e.Key] = e.Tenant
	}
	return keys, nil
}

// ParseKeysEnv decodes the value of FEDMESH_API_KEYS: either a keys document
// in JSON ({"keys":[…]}) or a short list "key1=tenant1,key2=tenant2" whose
// tenants get the defaults (privacy internal, any region, no rate limit).
func ParseKeysEnv(v string) (map[string]Tenant, error) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, "{") {
		return ParseKeys([]byte(v))
	}
	keys := map[string]Tenant{}
	for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		key, tenant, ok := strings.Cut(part, "=")
		if !ok || key == "" || tenant == "" {
			return nil, fmt.Errorf("FEDMESH_API_KEYS: entry %q is not key=tenant", redact(part))
		}
		if _, dup := keys[key]; dup {
			return nil, fmt.Errorf("FEDMESH_API_KEYS: key %s appears twice", redact(key))
		}
		t := Tenant{ID: tenant}
		if err := t.validate(); err != nil {
			return nil, fmt.Errorf("FEDMESH_API_KEYS: %w", err)
		}
		keys[key] = t
	}
	return keys, nil
}

// keyHash is what the gateway looks API keys up by. Hashing first means the
// map lookup's timing depends on the SHA-256 of what a caller sent, not on
// how many leading bytes it shares with a real key.
func keyHash(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

func hashKeys(keys map[string]Tenant) map[[sha256.Size]byte]Tenant {
	out := make(map[[sha256.Size]byte]Tenant, len(keys))
	for k, t := range keys {
		out[keyHash(k)] = t
	}
	return out
}
