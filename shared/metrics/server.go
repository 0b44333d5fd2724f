package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
)

// DevListen is where `fedmesh dev` serves its metrics unless told
// otherwise: 9464 is the port OpenTelemetry's Prometheus exporters use.
const DevListen = "127.0.0.1:9464"

// Off is the --metrics-listen value that turns the listener off (as does "").
const Off = "off"

// Path is where the metrics are served.
const Path = "/metrics"

const (
	// readHeaderTimeout bounds a scraper sending its request headers.
	readHeaderTimeout = 10 * time.Second
	// closeTimeout bounds how long Close lets a scrape in progress finish.
	closeTimeout = 2 * time.Second
)

// Enabled reports whether a --metrics-listen value asks for a listener:
// "" and "off" do not.
func Enabled(addr string) bool {
	addr = strings.TrimSpace(addr)
	return addr != "" && !strings.EqualFold(addr, Off)
}

// Handler answers GET /metrics from g (text format, or OpenMetrics when the
// scraper asks for it); anything else is 404. A collector that fails does
// not hide the others.
func Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not found: metrics are at "+Path, http.StatusNotFound)
	})
	return mux
}

// Server is a metrics listener of its own, apart from any API a service
// serves: Listen binds (so a taken port fails before anything starts),
// Serve starts answering, Close stops.
type Server struct {
	ln    net.Listener
	group *lifecycle.Group // the serve loop

	mu       sync.Mutex
	srv      *http.Server
	closed   bool
	serveErr error // what Serve returned; read once group has stopped
}

// Listen binds addr (host:port; port 0 picks a free one).
func Listen(ctx context.Context, addr string) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", strings.TrimSpace(addr))
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return &Server{ln: ln, group: lifecycle.NewGroup()}, nil
}

// Addr is the bound address (the real port when it was 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is where a scraper finds the metrics.
func (s *Server) URL() string { return "http://" + s.Addr() + Path }

// Serve answers scrapes from g until Close; it returns at once. A second
// call, or one after Close, does nothing.
func (s *Server) Serve(g prometheus.Gatherer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil || s.closed {
		return
	}
	srv := &http.Server{Handler: Handler(g), ReadHeaderTimeout: readHeaderTimeout}
	s.srv = srv
	s.group.Go(func(context.Context) { s.serveErr = srv.Serve(s.ln) })
}

// Close stops serving: scrapes in progress get a moment to finish. It
// closes the listener also when Serve never ran, and is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.srv == nil {
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("metrics %s: close: %w", s.Addr(), err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	var err error
	if serr := s.srv.Shutdown(ctx); serr != nil {
		err = errors.Join(fmt.Errorf("metrics %s: shutdown: %w", s.Addr(), serr), s.srv.Close())
	}
	s.group.Stop() // Serve returned when Shutdown closed the listener
	if s.serveErr != nil && !errors.Is(s.serveErr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("metrics %s: serve: %w", s.Addr(), s.serveErr))
	}
	return err
}
