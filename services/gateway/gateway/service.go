package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Service is a running gateway.
type Service struct {
	nc      *nats.Conn
	cfg     Config
	log     zerolog.Logger
	keys    map[[sha256.Size]byte]Tenant // API keys by keyHash
	metrics *metrics
	limits  *limiter

	mu       sync.Mutex
	cl       *client.Client
	srv      *http.Server
	ln       net.Listener
	serveErr chan error
	// stopStreams is cancelled by Stop: open SSE streams end (and are
	// cancelled in the mesh) instead of holding shutdown up.
	stopStreams context.Context
	cancel      context.CancelFunc
}

// New validates cfg and builds a gateway; Start makes it listen.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("gateway: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{nc: nc, cfg: cfg, log: log, keys: hashKeys(cfg.Keys),
		metrics: newMetrics(), limits: newLimiter()}, nil
}

// Start opens the SDK client and the listener; it returns once the gateway
// accepts connections.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("gateway: already started")
	}
	cl, err := client.New(s.nc, client.WithSubjects(s.cfg.Subjects))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		_ = cl.Close()
		return fmt.Errorf("gateway: listen on %s: %w", s.cfg.Addr, err)
	}
	s.stopStreams, s.cancel = context.WithCancel(context.Background())
	s.cl, s.ln = cl, ln
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: nil}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.srv.Serve(ln) }()
	s.log.Info().Str("addr", ln.Addr().String()).Int("keys", len(s.cfg.Keys)).Msg("gateway listening")
	return nil
}

// Addr is the address the gateway listens on (the real port when Addr ended in :0).
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return s.cfg.Addr
	}
	return s.ln.Addr().String()
}

// Stop stops accepting requests, ends open streams (cancelling them in the
// mesh), lets other requests finish for ShutdownGrace, then closes.
func (s *Service) Stop() error {
	s.mu.Lock()
	srv, cancel, cl, serveErr := s.srv, s.cancel, s.cl, s.serveErr
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	cancel()
	ctx, done := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer done()
	err := srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("gateway: graceful shutdown: %w", err), srv.Close())
	}
	if serr := <-serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("gateway: serve: %w", serr))
	}
	err = errors.Join(err, cl.Close())
	s.log.Info().Msg("gateway stopped")
	return err
}

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /v1/chat/completions", s.authed("chat", s.chat))
	mux.HandleFunc("POST /v1/completions", s.authed("completions", s.completions))
	mux.HandleFunc("POST /v1/embeddings", s.authed("embeddings", s.embeddings))
	mux.HandleFunc("POST /v1/audio/transcriptions", s.authed("transcriptions", s.transcriptions))
	mux.HandleFunc("POST /v1/audio/speech", s.authed("speech", s.speech))
	mux.HandleFunc("POST /v1/images/generations", s.authed("images", s.images))
	mux.HandleFunc("GET /v1/models", s.authed("models", s.models))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// OpenAI's own answer to an unknown URL (or a known one with the wrong method).
		writeJSON(w, http.StatusNotFound, apiError{Error: apiErrorBody{Type: "invalid_request_error", Code: "unknown_url",
			Message: "Unrecognized request URL (" + r.Method + " " + r.URL.Path + ")"}})
	})
	return mux
}

func (s *Service) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.nc.IsConnected() {
		http.Error(w, "NATS not connected: "+s.nc.Status().String(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ready\n"))
}

// caller is an authenticated request.
type caller struct {
	endpoint string
	tenant   Tenant
	start    time.Time
}

type handler func(w http.ResponseWriter, r *http.Request, c caller)

// authed checks the Bearer key and the tenant's rate limit before h runs.
func (s *Service) authed(endpoint string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := caller{endpoint: endpoint, start: time.Now()}
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		t, known := s.keys[keyHash(strings.TrimSpace(key))]
		if !ok || !known {
			s.metrics.observe(observation{endpoint: endpoint, tenant: "unauthenticated", status: http.StatusUnauthorized,
				code: wire.CodeUnauthorized, elapsed: time.Since(c.start)})
			writeError(w, &wire.Error{Code: wire.CodeUnauthorized, Description: "missing or invalid API key (Authorization: Bearer <key>)"})
			return
		}
		c.tenant = t
		if allowed, wait := s.limits.allow(t); !allowed {
			s.metrics.observe(observation{endpoint: endpoint, tenant: t.ID, status: http.StatusTooManyRequests,
				code: wire.CodeOverloaded, elapsed: time.Since(c.start)})
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			writeError(w, &wire.Error{Code: wire.CodeOverloaded, Description: "tenant " + t.ID + " is over its rate limit of " +
				strconv.FormatFloat(t.RequestsPerSecond, 'g', -1, 64) + " requests/s"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		h(w, r, c)
	}
}
