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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/wire"
)

var _ servicecmd.Service = (*Service)(nil)

// Service is a running gateway.
type Service struct {
	nc      *nats.Conn
	cfg     Config
	log     zerolog.Logger
	keys    map[[sha256.Size]byte]Tenant // API keys by keyHash
	metrics *metrics
	limits  *limiter
	slots   *slots // requests in flight per tenant

	life  lifecycle.Guard
	group *lifecycle.Group // the HTTP serve loop
	cl    *client.Client
	srv   *http.Server
	ln    net.Listener
	// serveErr is what Serve returned; read once group has stopped.
	serveErr error
	// streams is cancelled by Stop: open SSE streams end (and are cancelled
	// in the mesh) instead of holding shutdown up.
	streams    context.Context
	endStreams context.CancelFunc
}

// New validates cfg (zero fields take their defaults) and builds a gateway;
// Start makes it listen.
func New(nc *nats.Conn, cfg Config, log zerolog.Logger) (*Service, error) {
	if nc == nil {
		return nil, errors.New("gateway: nil NATS connection")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	streams, endStreams := context.WithCancel(context.Background())
	return &Service{nc: nc, cfg: cfg, log: log, keys: hashKeys(cfg.Keys),
		metrics: newMetrics(), limits: newLimiter(), slots: newSlots(cfg), group: lifecycle.NewGroup(),
		streams: streams, endStreams: endStreams}, nil
}

// Start opens the SDK client and the listener; it returns once the gateway
// accepts connections. It runs once; a failed Start leaves nothing open.
func (s *Service) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop stops accepting requests, ends open streams (cancelling them in the
// mesh), lets other requests finish for ShutdownGrace, then closes. It is
// idempotent.
func (s *Service) Stop() error { return s.life.Stop(s.stop) }

func (s *Service) start(ctx context.Context) error {
	// one cap: what the HTTP body may be is what the SDK uploads
	cl, err := client.New(s.nc, client.WithSubjects(s.cfg.Subjects), client.WithDropped(s.metrics.dropped),
		client.WithMaxBody(s.cfg.MaxBodyBytes))
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	s.cl = cl
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	// No WriteTimeout: it would bound a whole stream; each write has its
	// own deadline instead (timeouts.go). ReadTimeout ends with the body:
	// the server clears it when the handler has read the body to its end.
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, ReadTimeout: s.cfg.ReadTimeout,
		IdleTimeout: s.cfg.IdleTimeout, MaxHeaderBytes: s.cfg.MaxHeaderBytes}
	s.srv = srv
	s.group.Go(func(context.Context) { s.serveErr = srv.Serve(ln) })
	s.followModels(ctx) // the model ids metrics may label (metrics.go)
	s.log.Info().Str("addr", ln.Addr().String()).Int("keys", len(s.cfg.Keys)).Msg("gateway listening")
	return nil
}

// stop undoes whatever start did, in order: streams, HTTP, then the client
// the handlers used.
func (s *Service) stop() error {
	var err error
	s.endStreams()
	if s.srv != nil { // set in start right after the listener: nothing fails between
		ctx, done := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
		if serr := s.srv.Shutdown(ctx); serr != nil {
			err = errors.Join(fmt.Errorf("gateway %s: graceful shutdown: %w", s.ln.Addr(), serr), s.srv.Close())
		}
		done()
		s.group.Stop() // Serve returned when Shutdown closed the listener
		if s.serveErr != nil && !errors.Is(s.serveErr, http.ErrServerClosed) {
			err = errors.Join(err, fmt.Errorf("gateway %s: serve: %w", s.ln.Addr(), s.serveErr))
		}
	}
	if s.cl != nil {
		err = errors.Join(err, s.cl.Close())
	}
	s.log.Info().Msg("gateway stopped")
	return err
}

// Addr is the address the gateway listens on (the real port when Addr ended
// in :0) once Start has returned; before, the configured one.
func (s *Service) Addr() string {
	if s.ln == nil {
		return s.cfg.Addr
	}
	return s.ln.Addr().String()
}

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
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

// caller is a request to an API endpoint: authenticated once authed let
// it through.
type caller struct {
	endpoint string
	tenant   Tenant // ID "unauthenticated" until the key is checked
	start    time.Time
	// requestID names the request in every answer, log line and mesh
	// message: the caller's X-Fed-Request-Id when it is a valid id, else a
	// new one (an invalid one is then a 400 naming this id).
	requestID string
}

// request is the mesh request as far as it is known before the body is read.
func (c caller) request() client.Request { return client.Request{RequestID: c.requestID} }

type handler func(w http.ResponseWriter, r *http.Request, c caller)

// authed checks the Bearer key, the tenant's rate limit and its cap on
// requests in flight before h runs, and holds one of the tenant's slots
// until h returns (for a stream: until it ends).
func (s *Service) authed(endpoint string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := caller{endpoint: endpoint, tenant: Tenant{ID: "unauthenticated"}, start: time.Now(), requestID: requestIDOf(r)}
		// the server's own writer: over the limit it closes the connection
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		w = withWriteDeadlines(w, s.cfg.WriteTimeout)
		w.Header().Set(hdrRequestID, c.requestID) // on every answer, errors too
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		t, known := s.keys[keyHash(strings.TrimSpace(key))]
		if !ok || !known {
			s.fail(w, c, c.request(), "", invalid(wire.CodeUnauthorized, "missing or invalid API key (Authorization: Bearer <key>)"))
			return
		}
		c.tenant = t
		if err := s.tooLargeBody(r); err != nil { // before anything is read or uploaded
			s.fail(w, c, c.request(), "", err)
			return
		}
		if allowed, wait := s.limits.allow(t); !allowed {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			s.fail(w, c, c.request(), "", invalid(wire.CodeOverloaded, "tenant %s is over its rate limit of %s requests/s",
				t.ID, strconv.FormatFloat(t.RequestsPerSecond, 'g', -1, 64)))
			return
		}
		limit, ok := s.slots.acquire(t.ID)
		if !ok {
			// No way to know when a slot frees up: retry soon.
			w.Header().Set("Retry-After", "1")
			s.fail(w, c, c.request(), "", invalid(wire.CodeOverloaded,
				"too many concurrent requests: tenant %s may have %d in flight", t.ID, limit))
			return
		}
		defer s.slots.release(t.ID)
		h(w, r, c)
	}
}

// requestIDOf is the caller's X-Fed-Request-Id when it is a valid id (it
// becomes the subject token of fed.cancel.<id>), else a new one.
func requestIDOf(r *http.Request) string {
	if id := r.Header.Get(hdrRequestID); id != "" && wire.ValidateID("request id", id) == nil {
		return id
	}
	return nuid.Next()
}
