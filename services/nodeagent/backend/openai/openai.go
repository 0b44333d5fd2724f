// Package openai is a node agent backend for any OpenAI-compatible model
// server (vLLM, llama.cpp server, Ollama, TGI). It maps fedmesh capabilities
// to the OpenAI endpoints, forwards streamed answers as they arrive, and
// turns HTTP errors, stalls and dropped connections into *wire.Error.
package openai

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Defaults.
const (
	DefaultStallTimeout = 60 * time.Second
	DefaultAPIKeyEnv    = "FEDMESH_BACKEND_API_KEY"
	DefaultVoice        = "alloy"
	// maxErrorBody bounds how much of an error answer is read.
	maxErrorBody = 64 << 10
	// maxWholeBody bounds a non-streamed JSON answer.
	maxWholeBody = 64 << 20
)

// Config of the OpenAI-compatible backend.
type Config struct {
	// BaseURL of the server, with or without the trailing /v1
	// (http://127.0.0.1:8000 and http://127.0.0.1:8000/v1 are the same).
	BaseURL string
	// APIKey is sent as a Bearer token. Load it from the environment
	// (APIKeyFromEnv); it is never logged or put in an error.
	APIKey string
	// ModelNames maps a fedmesh model id to the server's model name (ids
	// must be token-safe, server names often are not: "meta-llama/Llama-3-8B").
	// A model without entry is sent under its fedmesh id.
	ModelNames map[string]string
	// Completions sends plain-text generate/code input to /v1/completions as
	// a prompt instead of one chat message.
	Completions bool
	// StallTimeout ends a request with 504 when the server sends nothing for
	// this long (waiting for headers or between stream events).
	StallTimeout time.Duration
	// Voice for plain-text synthesize input.
	Voice string
	// Client is the HTTP client; nil → a client without overall timeout
	// (requests are bounded by their context and StallTimeout).
	Client *http.Client
}

// APIKeyFromEnv reads the API key from the environment variable name
// (DefaultAPIKeyEnv when empty).
func APIKeyFromEnv(lookup func(string) (string, bool), name string) string {
	if name == "" {
		name = DefaultAPIKeyEnv
	}
	v, _ := lookup(name)
	return strings.TrimSpace(v)
}

// Backend talks to one OpenAI-compatible server.
type Backend struct {
	cfg  Config
	base string // ends in /v1
}

var _ backend.Backend = (*Backend)(nil)

// New checks cfg and returns the backend.
func New(cfg Config) (*Backend, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.BaseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("backend_url %q is not an http(s) URL", cfg.BaseURL)
	}
	base := strings.TrimRight(u.String(), "/")
	if !strings.HasSuffix(base, "/v1") {
		base += "/v1"
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.Voice == "" {
		cfg.Voice = DefaultVoice
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	return &Backend{cfg: cfg, base: base}, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "openai" }

// String never shows the API key.
func (b *Backend) String() string { return "openai(" + b.base + ")" }

// Generate implements backend.Backend.
func (b *Backend) Generate(ctx context.Context, call backend.Call, emit func([]byte) error) (backend.Result, error) {
	hc, err := b.build(call)
	if err != nil {
		return backend.Result{}, err
	}
	// The watchdog cancels the HTTP request when the server goes quiet; the
	// cause tells a stall from the caller's own cancel.
	hctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(b.cfg.StallTimeout, func() { cancel(errStalled) })
	defer w.stop()
	if !hc.sse {
		// A non-streamed answer (embeddings, images, audio) sends its headers
		// only when done: only the deadline bounds that wait; the watchdog
		// starts with the body.
		w.stop()
	}

	hreq, err := http.NewRequestWithContext(hctx, http.MethodPost, b.base+hc.path, hc.body)
	if err != nil {
		return backend.Result{}, wire.Errorf(wire.CodeInternal, "backend openai: build request: %v", err)
	}
	hreq.Header.Set("Content-Type", hc.contentType)
	if hc.sse {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	if b.cfg.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+b.cfg.APIKey)
	}
	resp, err := b.cfg.Client.Do(hreq)
	if err != nil {
		return backend.Result{}, b.transportError(ctx, hctx, hc.path, err)
	}
	defer resp.Body.Close()
	w.kick()
	if resp.StatusCode/100 != 2 {
		return backend.Result{}, httpError(resp, hc.path)
	}
	body := &kickReader{r: resp.Body, w: w}
	res, err := hc.read(resp, body, emit)
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if errors.Is(context.Cause(hctx), errStalled) {
			return res, wire.Errorf(wire.CodeTimeout, "backend openai %s: stalled, nothing for %s", hc.path, b.cfg.StallTimeout)
		}
		var we *wire.Error
		if errors.As(err, &we) {
			return res, we
		}
		return res, wire.Errorf(wire.CodeInternal, "backend openai %s: %v", hc.path, err)
	}
	return res, nil
}

var errStalled = errors.New("backend stalled")

func (b *Backend) transportError(ctx, hctx context.Context, path string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(context.Cause(hctx), errStalled):
		return wire.Errorf(wire.CodeTimeout, "backend openai %s: no answer within %s", path, b.cfg.StallTimeout)
	}
	// The url.Error text holds the URL, never the key (it is a header).
	return wire.Errorf(wire.CodeNoCapacity, "backend openai %s: server unreachable: %v", path, err)
}

// watchdog fires when kick is not called for d.
type watchdog struct {
	d time.Duration
	t *time.Timer
}

func newWatchdog(d time.Duration, fire func()) *watchdog {
	return &watchdog{d: d, t: time.AfterFunc(d, fire)}
}

func (w *watchdog) kick() { w.t.Reset(w.d) }
func (w *watchdog) stop() { w.t.Stop() }

// kickReader kicks the watchdog on every read that brought bytes.
type kickReader struct {
	r interface{ Read([]byte) (int, error) }
	w *watchdog
}

func (k *kickReader) Read(p []byte) (int, error) {
	n, err := k.r.Read(p)
	if n > 0 {
		k.w.kick()
	}
	return n, err
}
