// Package openai is a node agent backend for any OpenAI-compatible model
// server (vLLM, llama.cpp server, Ollama, TGI). It maps fedmesh capabilities
// to the OpenAI endpoints, forwards streamed answers as they arrive, asks
// for whole answers whole, continues an answer another node began (vLLM's
// continue_final_message) and turns HTTP errors, stalls and dropped
// connections into *wire.Error. Connections to the server are pooled and
// kept alive: bodies are drained before close so they go back to the pool.
package openai

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/tracing"
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
	// DefaultMaxConns is the idle connection pool when Config.MaxConns is 0
	// (the agent sets it to its max_concurrency).
	DefaultMaxConns = 64
	// maxDrain and drainWait bound reading what is left of a finished answer
	// (the chunked terminator after [DONE], the rest of an error body) so
	// its connection can be reused; past them the connection is closed.
	maxDrain  = 256 << 10
	drainWait = time.Second
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
	// MaxConns sizes the keep-alive pool (idle connections kept to the
	// server); set it to at least the node's max_concurrency so requests in
	// flight never have to open new connections. 0 → DefaultMaxConns.
	// Ignored when Client is set.
	MaxConns int
	// Continue says the server can continue a given answer (vLLM and SGLang
	// support continue_final_message; others do not): the node then takes
	// continuations of streams another node lost (backend.Continuer).
	Continue bool
	// Client is the HTTP client; nil → a client without overall timeout
	// (requests are bounded by their context and StallTimeout) on a pooled
	// transport sized by MaxConns.
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
	// drainLimit bounds the drain of a finished body (maxDrain; 0 = close
	// at once, the old behaviour, kept for the benchmark's baseline).
	drainLimit int64
	trace      *httptrace.ClientTrace
	newConns   atomic.Uint64
	reused     atomic.Uint64
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Continuer = (*Backend)(nil)
)

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
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Transport: newTransport(cfg.MaxConns)}
	}
	b := &Backend{cfg: cfg, base: base, drainLimit: maxDrain}
	b.trace = &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if info.Reused {
			b.reused.Add(1)
		} else {
			b.newConns.Add(1)
		}
	}}
	return b, nil
}

// newTransport is http.DefaultTransport's setup with a keep-alive pool of
// maxConns idle connections per host: the default 2 made most requests of
// a busy node open a new connection. Connections in use are not capped;
// the node's max_concurrency already bounds them.
func newTransport(maxConns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          max(100, maxConns),
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Stats reports how requests got their connection: newly opened, or reused
// from the keep-alive pool (for the agent's metrics).
func (b *Backend) Stats() (newConns, reused uint64) {
	return b.newConns.Load(), b.reused.Load()
}

// Continues implements backend.Continuer: only when the config says the
// server supports continue_final_message.
func (b *Backend) Continues() bool { return b.cfg.Continue }

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
		// A non-streamed answer (whole text, embeddings, images, audio) sends
		// its headers only when done: only the deadline bounds that wait; the
		// watchdog starts with the body.
		w.stop()
	}

	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(hctx, b.trace), http.MethodPost, b.base+hc.path, hc.body)
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
	// W3C traceparent of the node's span, so the model server's own traces
	// (vLLM --otlp-traces-endpoint) join the request's trace
	tracing.InjectHTTP(ctx, propagation.HeaderCarrier(hreq.Header))
	resp, err := b.cfg.Client.Do(hreq)
	if err != nil {
		return backend.Result{}, b.transportError(ctx, hctx, hc.path, err)
	}
	w.kick()
	if resp.StatusCode/100 != 2 {
		err := httpError(resp, hc.path)
		b.release(ctx, resp.Body, w, true)
		return backend.Result{}, err
	}
	body := &kickReader{r: resp.Body, w: w}
	var emitErr error // returned as it is (backend.Emit)
	res, err := hc.read(resp, body, func(p []byte) error {
		if err := emit(p); err != nil {
			emitErr = err
			return err
		}
		return nil
	})
	// Keep the connection only when the server has ended its answer; on a
	// cancel, a failed emit, a stall or garbage, closing it at once is what
	// tells the server to stop generating.
	b.release(ctx, resp.Body, w, err == nil || errors.As(err, new(*answeredError)))
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if emitErr != nil {
			return res, emitErr
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

// release closes an answer's body. When the server is done with it (and the
// caller still waits) what is left is read first, at most drainLimit bytes
// for at most drainWait: a body closed before EOF (an SSE stream stops
// being read at [DONE], before the chunked terminator) loses its
// connection, and the next request pays a new TCP (and TLS) handshake.
func (b *Backend) release(ctx context.Context, body io.ReadCloser, w *watchdog, done bool) {
	if done && ctx.Err() == nil && b.drainLimit > 0 {
		w.after(min(drainWait, b.cfg.StallTimeout))
		_, _ = io.CopyN(io.Discard, body, b.drainLimit)
	}
	_ = body.Close()
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

func (w *watchdog) kick()                 { w.t.Reset(w.d) }
func (w *watchdog) after(d time.Duration) { w.t.Reset(d) }
func (w *watchdog) stop()                 { w.t.Stop() }

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
