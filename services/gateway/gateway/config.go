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

	"github.com/fedmesh/fedmesh/shared/blobs"
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
	// DefaultMaxBodyBytes bounds a request body: the mesh's body cap
	// (blobs.DefaultMaxBytes, 64 MiB); a body too large for one NATS
	// message goes out of band through fed_blobs (DESIGN §3.7).
	DefaultMaxBodyBytes = blobs.DefaultMaxBytes
	// DefaultShutdownGrace is how long Stop lets non-streamed requests finish.
	DefaultShutdownGrace = 5 * time.Second
	// DefaultReadHeaderTimeout bounds how long a client may take to send a
	// request's headers (slowloris).
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds how long a client may take to send a whole
	// request, headers and body: room for a long audio upload on a slow link.
	DefaultReadTimeout = time.Minute
	// DefaultWriteTimeout bounds each write to the client (a whole answer, or
	// one SSE event), not the response: a stream may last as long as it needs.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long an idle keep-alive connection stays open.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxHeaderBytes bounds a request's headers (431 over it): API
	// keys, X-Fed-* overrides and an SDK's own headers fit many times over.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConcurrent is how many requests a tenant may have in flight
	// at once (a key's max_concurrent overrides it).
	DefaultMaxConcurrent = 64
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
	// ReadHeaderTimeout bounds reading a request's headers; 0 means
	// DefaultReadHeaderTimeout. The connection is closed when it passes.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body, from its
	// first byte; 0 means DefaultReadTimeout. A body not in by then is a 408.
	// It ends with the body: an answer or stream may take longer.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write to the client (a whole answer or one SSE
	// event reaching the connection); 0 means DefaultWriteTimeout. A client
	// that stops reading is cut off; a stream that keeps flowing is not.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (431 over it); 0 means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxConcurrent is how many requests a tenant may have in flight at once
	// when its keys do not say (Tenant.MaxConcurrent); 0 means
	// DefaultMaxConcurrent. Over it: 429 with Retry-After.
	MaxConcurrent int
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
	// MaxConcurrent is how many requests the tenant may have in flight at
	// once, over all its keys; 0 means Config.MaxConcurrent. Every key of a
	// tenant must come to the same value.
	MaxConcurrent int `json:"max_concurrent,omitempty" yaml:"max_concurrent,omitempty"`
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

		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		MaxConcurrent:     DefaultMaxConcurrent,
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
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, DefaultMaxConcurrent)
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
	case c.ReadHeaderTimeout < 0:
		return fmt.Errorf("gateway config: read_header_timeout must be >= 0, got %s", c.ReadHeaderTimeout)
	case c.ReadTimeout < 0:
		return fmt.Errorf("gateway config: read_timeout must be >= 0, got %s", c.ReadTimeout)
	case c.WriteTimeout < 0:
		return fmt.Errorf("gateway config: write_timeout must be >= 0, got %s", c.WriteTimeout)
	case c.IdleTimeout < 0:
		return fmt.Errorf("gateway config: idle_timeout must be >= 0, got %s", c.IdleTimeout)
	case c.MaxHeaderBytes < 0:
		return fmt.Errorf("gateway config: max_header_bytes must be >= 0, got %d", c.MaxHeaderBytes)
	case c.MaxConcurrent < 0:
		return fmt.Errorf("gateway config: max_concurrent must be >= 0, got %d", c.MaxConcurrent)
	}
	// sorted: the same key is reported every time
	caps := map[string]string{} // tenant → the first key that set its concurrency cap
	for _, key := range slices.Sorted(maps.Keys(c.Keys)) {
		t := c.Keys[key]
		if err := t.validate(); err != nil {
			return fmt.Errorf("gateway config: keys: key %s: %w", redact(key), err)
		}
		// One counter per tenant: its keys must agree on the cap, or which
		// key came first would decide it.
		if first, seen := caps[t.ID]; !seen {
			caps[t.ID] = key
		} else if a, b := c.maxConcurrent(c.Keys[first]), c.maxConcurrent(t); a != b {
			return fmt.Errorf("gateway config: keys: key %s: tenant %s: max_concurrent %d, but key %s has %d "+
				"(a tenant's keys share one cap)", redact(key), t.ID, b, redact(first), a)
		}
	}
	return nil
}

// maxConcurrent is t's cap on requests in flight.
func (c Config) maxConcurrent(t Tenant) int {
	return cmp.Or(t.MaxConcurrent, c.MaxConcurrent, DefaultMaxConcurrent)
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
	if t.MaxConcurrent < 0 {
		return fmt.Errorf("tenant %s: max_concurrent must not be negative, got %d", t.ID, t.MaxConcurrent)
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
