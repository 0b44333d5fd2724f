// Package simserver is a simulated model server that behaves like vLLM
// under load: an OpenAI-compatible HTTP API (chat and completions, whole
// or streamed, with usage; embeddings; models; health) in front of an
// engine that batches continuously (a step takes longer as the batch
// grows), prefills only the prompt tokens its prefix cache does not hold,
// holds KV blocks for every running request and queues the rest, and
// exports vLLM's metrics. Answers and simulated timings are a function of
// the seed and the requests, so runs repeat.
//
// The engine runs in simulated time (engine.go, without goroutines); the
// Server drives it in real time, scaled by Config.TimeScale.
package simserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// Defaults and limits.
const (
	// DefaultAddr is vLLM's default port, on loopback.
	DefaultAddr = "127.0.0.1:8000"
	// DefaultModel is the served model name when Config.Models is empty.
	DefaultModel     = "fedmesh-sim"
	DefaultTimeScale = 1.0
	// MaxTimeScale bounds Config.TimeScale: beyond it steps are shorter
	// than the scheduler's own overhead.
	MaxTimeScale = 10000.0
	// EmbeddingDims is the length of an embedding (bge-small's).
	EmbeddingDims = 384
	// maxBody bounds a request body.
	maxBody = 32 << 20
	// shutdownGrace is how long Stop lets answers in flight finish.
	shutdownGrace = 2 * time.Second
	// maxLag is how far (real time) the engine may fall behind the clock
	// (a suspended process, an overloaded machine) before it skips ahead
	// instead of running the missed steps back to back.
	maxLag            = time.Second
	readHeaderTimeout = 10 * time.Second
)

// Config of a simulated server. Zero fields take the defaults.
type Config struct {
	// Addr is the listen address, host:port; port 0 picks a free one.
	Addr string
	// Profile is the server's speed and size; its zero fields take the
	// h100 profile's values.
	Profile Profile
	// TimeScale is simulated seconds per real second: 10 runs ten times
	// faster than the profile says (metrics stay in simulated seconds).
	TimeScale float64
	// Seed makes the answers; the same seed gives the same answers.
	Seed uint64
	// Models are the served model names, aliases of the one engine (vLLM
	// --served-model-name); the first names the metrics.
	Models []string
	Log    zerolog.Logger
}

// DefaultConfig is Config{} with the defaults filled in.
func DefaultConfig() Config {
	return Config{Addr: DefaultAddr, Profile: H100, TimeScale: DefaultTimeScale, Models: []string{DefaultModel}}
}

func (c Config) withDefaults() Config {
	c.Addr = cmp.Or(strings.TrimSpace(c.Addr), DefaultAddr)
	c.Profile = c.Profile.withDefaults()
	c.TimeScale = cmp.Or(c.TimeScale, DefaultTimeScale)
	if len(c.Models) == 0 {
		c.Models = []string{DefaultModel}
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("simserver: addr %q: want host:port: %w", c.Addr, err)
	}
	if math.IsNaN(c.TimeScale) || c.TimeScale <= 0 || c.TimeScale > MaxTimeScale {
		return fmt.Errorf("simserver: time_scale %v: want > 0 and <= %v", c.TimeScale, MaxTimeScale)
	}
	for i, m := range c.Models {
		if strings.TrimSpace(m) == "" {
			return fmt.Errorf("simserver: models[%d] is empty", i)
		}
	}
	if err := c.Profile.Validate(); err != nil {
		return fmt.Errorf("simserver: %w", err)
	}
	return nil
}

// Server is a running simulated model server.
type Server struct {
	cfg  Config
	log  zerolog.Logger
	life lifecycle.Guard
	reg  *prometheus.Registry

	loops *lifecycle.Group // the scheduler and the HTTP serve loop
	reqs  *lifecycle.Group // one goroutine per API request
	ln    net.Listener
	srv   *http.Server
	t0    time.Time // real time of simulated time 0
	wake  chan struct{}
	ids   atomic.Uint64

	mu  sync.Mutex // the engine
	eng *engine
}

var _ servicecmd.Service = (*Server)(nil)

// New checks cfg and builds a server; Start runs it.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log, eng: newEngine(cfg.Profile), wake: make(chan struct{}, 1),
		reg: prometheus.NewRegistry()}
	s.reg.MustRegister(newCollector(cfg.Models[0], cfg.Profile, s.snapshot))
	return s, nil
}

// Start builds and starts a server: what devmesh and tests call.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Start listens and starts serving; ctx bounds only the listen.
func (s *Server) Start(ctx context.Context) error { return s.life.Start(ctx, s.start, s.stop) }

// Stop stops accepting requests, gives the answers in flight a moment to
// finish, then cuts the rest and stops the engine. It is idempotent.
func (s *Server) Stop() error { return s.life.Stop(s.stop) }

func (s *Server) start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("simserver: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.loops, s.reqs = lifecycle.NewGroup(), lifecycle.NewGroup()
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: readHeaderTimeout}
	s.t0 = time.Now()
	s.loops.Go(s.schedule)
	s.loops.Go(func(context.Context) {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Str("addr", s.Addr()).Msg("simserver: serve")
		}
	})
	return nil
}

func (s *Server) stop() error {
	var err error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		if serr := s.srv.Shutdown(ctx); serr != nil {
			s.log.Info().Err(serr).Msg("simserver: cutting answers still in flight")
			if cerr := s.srv.Close(); cerr != nil {
				err = fmt.Errorf("simserver %s: close: %w", s.Addr(), cerr)
			}
		}
		cancel()
	} else if s.ln != nil {
		err = s.ln.Close()
	}
	if s.reqs != nil {
		s.reqs.Stop()
	}
	if s.loops != nil {
		s.loops.Stop()
	}
	return err
}

// Addr is the bound address ("" before Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL is the server's base URL (an OpenAI client's base URL is URL()+"/v1").
func (s *Server) URL() string { return "http://" + s.Addr() }

// Profile is the profile the server runs, its defaults filled in.
func (s *Server) Profile() Profile { return s.cfg.Profile }

// Models are the served model names.
func (s *Server) Models() []string { return append([]string(nil), s.cfg.Models...) }

// simNow is the simulated time the real clock has reached.
func (s *Server) simNow() time.Duration {
	return time.Duration(float64(time.Since(s.t0)) * s.cfg.TimeScale)
}

// realAt is the real time at which simulated time t is reached.
func (s *Server) realAt(t time.Duration) time.Time {
	return s.t0.Add(time.Duration(float64(t) / s.cfg.TimeScale))
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// schedule is the engine's one goroutine: while there is work it runs a
// step, waits until the real clock reaches the step's end, then hands out
// the tokens the step made. Steps follow each other exactly in simulated
// time, so a late timer delays tokens without changing the timings the
// metrics report.
func (s *Server) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lag := time.Duration(float64(maxLag) * s.cfg.TimeScale)
	for {
		s.mu.Lock()
		if !s.eng.busy() {
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		if now := s.simNow(); now-s.eng.now > lag {
			s.eng.skipTo(now)
		}
		_, evs := s.eng.step()
		end := s.eng.now
		s.mu.Unlock()
		if d := time.Until(s.realAt(end)); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		for _, ev := range evs {
			if ev.s.sink != nil {
				ev.s.sink.deliver(ev)
			}
		}
	}
}

// submit queues a request in the engine.
func (s *Server) submit(tokens []uint64, out int, reason string, snk sink) (*seq, error) {
	s.mu.Lock()
	sq, err := s.eng.add(tokens, out, reason, snk, s.simNow())
	s.mu.Unlock()
	if err != nil {
		return nil, badRequest("%v", err)
	}
	s.poke()
	return sq, nil
}

// cancel takes a request out of the engine (a client that went away);
// a finished one is left alone.
func (s *Server) cancel(sq *seq) {
	s.mu.Lock()
	removed := s.eng.cancel(sq)
	s.mu.Unlock()
	if removed {
		s.poke() // its blocks may admit someone waiting
	}
}

func (s *Server) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eng.snapshot()
}

// Metrics is the server's registry (what /metrics serves).
func (s *Server) Metrics() prometheus.Gatherer { return s.reg }

// routes are the server's HTTP endpoints. Methods are checked by the
// handlers so a wrong one gets a JSON 405, not the catch-all 404.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(path, method string, h http.Handler) {
		mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
				w.Header().Set("Allow", method)
				writeError(w, &apiError{status: http.StatusMethodNotAllowed, msg: "method " + r.Method + " not allowed: " + method + " " + path})
				return
			}
			h.ServeHTTP(w, r)
		}))
	}
	route("/v1/chat/completions", http.MethodPost, s.owned(s.generate(kindChat)))
	route("/v1/completions", http.MethodPost, s.owned(s.generate(kindCompletion)))
	route("/v1/embeddings", http.MethodPost, s.owned(s.embed))
	route("/v1/models", http.MethodGet, http.HandlerFunc(s.models))
	route("/health", http.MethodGet, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	route("/version", http.MethodGet, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": "fedmesh-simserver"})
	}))
	route(metrics.Path, http.MethodGet, metrics.Handler(s.reg))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, msg: "no route " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// owned runs an API handler on a goroutine of the request group, so Stop
// waits for every one of them; its ctx ends with the client's request or
// with the server.
func (s *Server) owned(h func(ctx context.Context, w http.ResponseWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		ok := s.reqs.Go(func(gctx context.Context) {
			defer close(done)
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			defer context.AfterFunc(gctx, cancel)()
			h(ctx, w, r)
		})
		if !ok {
			writeError(w, &apiError{status: http.StatusServiceUnavailable, msg: "the server is shutting down"})
			return
		}
		<-done
	})
}

// stream is where the scheduler leaves a request's progress for its
// handler: the latest event, and a nudge.
type stream struct {
	mu    sync.Mutex
	ev    event
	ready chan struct{}
}

func newStream() *stream { return &stream{ready: make(chan struct{}, 1)} }

func (st *stream) deliver(ev event) {
	st.mu.Lock()
	st.ev = ev
	st.mu.Unlock()
	select {
	case st.ready <- struct{}{}:
	default:
	}
}

func (st *stream) state() event {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ev
}

// wait blocks until the request is done; false when ctx ended first.
func (st *stream) wait(ctx context.Context) (event, bool) {
	for {
		if ev := st.state(); ev.done {
			return ev, true
		}
		select {
		case <-st.ready:
		case <-ctx.Done():
			return event{}, false
		}
	}
}
