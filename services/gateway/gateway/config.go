// Package gateway is fedmesh's OpenAI-compatible HTTP front door: it
// authenticates API keys to tenants, turns each OpenAI request into a NATS
// request on fed.infer.<capability> through the shared client SDK, and turns
// the mesh's answer (or error) back into OpenAI JSON or Server-Sent Events.
package gateway

import (
	"errors"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Config of a gateway. Zero Subjects means prefix "fed".
type Config struct {
	Subjects subject.Space
	// Addr is the HTTP listen address; "127.0.0.1:0" picks a free port (see Service.Addr).
	Addr string
	// Keys maps an API key (the Bearer token) to its tenant. An empty map
	// refuses every /v1 request with 401.
	Keys map[string]Tenant
	// Timeout is the end-to-end deadline of one request (DESIGN request_timeout).
	// X-Fed-Timeout-Ms may shorten it, never lengthen it.
	Timeout time.Duration
	// CatalogTimeout bounds the fed.catalog.list request behind GET /v1/models.
	CatalogTimeout time.Duration
	// MaxBodyBytes bounds a request body (audio uploads are the big ones).
	MaxBodyBytes int64
	// ShutdownGrace is how long Stop lets non-streamed requests finish.
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
		Addr:           "127.0.0.1:8080",
		Timeout:        wire.DefaultTimeout,
		CatalogTimeout: 5 * time.Second,
		MaxBodyBytes:   32 << 20,
		ShutdownGrace:  5 * time.Second,
	}
}

// withDefaults fills zero fields so a partly filled Config works.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Subjects.Prefix == "" {
		c.Subjects = d.Subjects
	}
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.CatalogTimeout == 0 {
		c.CatalogTimeout = d.CatalogTimeout
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = d.ShutdownGrace
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Timeout < 0 || c.Timeout > wire.MaxTimeout:
		return fmt.Errorf("gateway config: timeout %v: want 1ms to %v", c.Timeout, wire.MaxTimeout)
	case c.CatalogTimeout < 0:
		return fmt.Errorf("gateway config: catalog timeout %v is negative", c.CatalogTimeout)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("gateway config: max body bytes %d is negative", c.MaxBodyBytes)
	case c.ShutdownGrace < 0:
		return fmt.Errorf("gateway config: shutdown grace %v is negative", c.ShutdownGrace)
	}
	var errs []error
	for key, t := range c.Keys {
		if err := t.validate(); err != nil {
			errs = append(errs, fmt.Errorf("gateway config: key %s: %w", redact(key), err))
		}
	}
	return errors.Join(errs...)
}

func (t Tenant) validate() error {
	if t.ID == "" {
		return errors.New("tenant is empty")
	}
	if len(t.ID) > 256 {
		return fmt.Errorf("tenant %.32q… is longer than 256 bytes", t.ID)
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
