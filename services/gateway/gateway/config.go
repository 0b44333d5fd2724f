// Package gateway is fedmesh's OpenAI-compatible HTTP front door: it
// authenticates API keys to tenants, turns each OpenAI request into a NATS
// request on fed.infer.<capability> through the shared client SDK, and turns
// the mesh's answer (or error) back into OpenAI JSON or Server-Sent Events.
package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Defaults of Config (DESIGN §6). A zero field of Config means its default.
const (
	// DefaultAddr is the HTTP listen address.
	DefaultAddr = "127.0.0.1:8080"
	// DefaultTimeout is the end-to-end deadline of one request (DESIGN request_timeout).
	DefaultTimeout = wire.DefaultTimeout
	// DefaultCatalogTimeout bounds the fed.catalog.list request behind GET /v1/models.
	DefaultCatalogTimeout = 5 * time.Second
	// DefaultMaxBodyBytes bounds a request body: room for a long audio upload.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultShutdownGrace is how long Stop lets non-streamed requests finish.
	DefaultShutdownGrace = 5 * time.Second
)

// Config of a gateway. The zero value is DefaultConfig() without keys.
type Config struct {
	// Subjects is the subject namespace; the zero value uses prefix "fed".
	Subjects subject.Space
	// Addr is the HTTP listen address; "127.0.0.1:0" picks a free port (see
	// Service.Addr); "" means DefaultAddr.
	Addr string
	// Keys maps an API key (the Bearer token) to its tenant. An empty map
	// refuses every /v1 request with 401.
	Keys map[string]Tenant
	// Timeout is the end-to-end deadline of one request; 0 means DefaultTimeout.
	// X-Fed-Timeout-Ms may shorten it, never lengthen it.
	Timeout time.Duration
	// CatalogTimeout bounds the fed.catalog.list request behind GET /v1/models;
	// 0 means DefaultCatalogTimeout.
	CatalogTimeout time.Duration
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ShutdownGrace is how long Stop lets non-streamed requests finish; 0
	// means DefaultShutdownGrace.
	ShutdownGrace time.Duration
}

// Tenant is what an API key grants.
type Tenant struct {
	// ID is sent to the mesh as Fed-Tenant and labels metrics.
	ID string `json:"tenant" yaml:"tenant"`
	// Privacy is the tenant's default (and weakest allowed) privacy level;
	// "" means internal (DESIGN §3 default).
	Privacy string `json:"privacy,omitempty" yaml:"privacy,omitempty"`
	// Regions is the allow-list of regions the tenant's data may go to; empty means any.
	Regions []string `json:"regions,omitempty" yaml:"regions,omitempty"`
	// RequestsPerSecond is the tenant's rate limit; 0 means unlimited.
	RequestsPerSecond float64 `json:"requests_per_second,omitempty" yaml:"requests_per_second,omitempty"`
	// Burst is how many requests may come at once; 0 means ceil(RequestsPerSecond).
	Burst int `json:"burst,omitempty" yaml:"burst,omitempty"`
}

// DefaultConfig returns DESIGN §6's gateway defaults.
func DefaultConfig() Config {
	return Config{
		Subjects:       subject.Default,
		Addr:           DefaultAddr,
		Timeout:        DefaultTimeout,
		CatalogTimeout: DefaultCatalogTimeout,
		MaxBodyBytes:   DefaultMaxBodyBytes,
		ShutdownGrace:  DefaultShutdownGrace,
	}
}

// withDefaults fills every zero field with its default.
func (c Config) withDefaults() Config {
	if c.Subjects.Prefix == "" {
		c.Subjects = subject.Default
	}
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.CatalogTimeout = cmp.Or(c.CatalogTimeout, DefaultCatalogTimeout)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, DefaultShutdownGrace)
	return c
}

// Validate reports the first field that no default can stand for, then the
// first key whose tenant is invalid.
func (c Config) Validate() error {
	switch {
	case c.Timeout < 0 || c.Timeout > wire.MaxTimeout:
		return fmt.Errorf("gateway config: timeout must be >= 0 and <= %s, got %s", wire.MaxTimeout, c.Timeout)
	case c.CatalogTimeout < 0:
		return fmt.Errorf("gateway config: catalog_timeout must be >= 0, got %s", c.CatalogTimeout)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("gateway config: max_body_bytes must be >= 0, got %d", c.MaxBodyBytes)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("gateway config: shutdown_grace must be >= 0, got %s", c.ShutdownGrace)
	}
	for _, key := range slices.Sorted(maps.Keys(c.Keys)) { // sorted: the same key is reported every time
		if err := c.Keys[key].validate(); err != nil {
			return fmt.Errorf("gateway config: keys: key %s: %w", redact(key), err)
		}
	}
	return nil
}

func (t Tenant) validate() error {
	if t.ID == "" {
		return errors.New("tenant is empty")
	}
	if len(t.ID) > wire.MaxTenantLen {
		// The router refuses a longer Fed-Tenant: such a key could serve nothing.
		return fmt.Errorf("tenant %.32q… is longer than %d bytes", t.ID, wire.MaxTenantLen)
	}
	if _, err := wire.ParsePrivacy(t.Privacy); err != nil {
		return fmt.Errorf("tenant %s: privacy: %w", t.ID, err)
	}
	for _, r := range t.Regions {
		if err := wire.ValidateID("region", r); err != nil {
			return fmt.Errorf("tenant %s: regions: %w", t.ID, err)
		}
	}
	if t.RequestsPerSecond < 0 || t.Burst < 0 {
		return fmt.Errorf("tenant %s: requests_per_second and burst must not be negative", t.ID)
	}
	return nil
}

// redact keeps enough of a key to find it in a config file, not to use it.
func redact(key string) string {
	if len(key) <= 6 {
		return "***"
	}
	return key[:4] + "…"
}
