// Package devmesh composes the whole mesh in one process: an embedded
// nats-server, catalog, health, router, node agents and the gateway, each on
// its own in-process connection as if it were its own program. `fedmesh dev`,
// the end-to-end tests and the benchmarks all start the mesh through it.
// One Prometheus registry holds every part's metrics, each part's series
// labelled as its own command would label them (fedmesh_service,
// fedmesh_instance); Options.MetricsListen serves it.
package devmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// Options say what to start. Zero values take each service's defaults.
type Options struct {
	Server   *server.Server // required: where the mesh runs
	Subjects subject.Space
	Log      zerolog.Logger

	// Tune lets tests shorten intervals; nil keeps the defaults.
	Catalog func(*catalog.Config)
	Health  func(*health.Config)
	Router  func(*router.Config)

	// Routers is how many router replicas to run (default 1).
	Routers int
	Nodes   []nodeagent.Config
	// Gateway starts the HTTP gateway when non-nil.
	Gateway *gateway.Config
	// Credentials, when set, gives the connection options of each part
	// (service name as its command calls itself, instance id; node agents
	// by node config): secured mode, every part on its own user.
	Credentials func(service, id string, node *nodeagent.Config) ([]nats.Option, error)
	// AsyncError, when set, also hears every part's async NATS error
	// (permission violations among them), by the part's connection name.
	AsyncError func(part string, err error)
	// MetricsListen is where every part's Prometheus metrics are served
	// (host:port; `fedmesh dev` defaults to metrics.DevListen); "" or "off":
	// not served (MetricsHandler still answers).
	MetricsListen string
}

// Service names, as their commands call themselves: the middle of each
// part's connection name (servicecmd.ConnName) and its log component.
const (
	svcCatalog   = "catalog"
	svcHealth    = "health"
	svcRouter    = "router"
	svcNodeAgent = "nodeagent"
	svcGateway   = "gateway"
)

// coreID is the instance id of the services the mesh runs once.
const coreID = "1"

// spec is one part of the mesh before it starts.
type spec struct {
	service, id string
	build       func(nc *nats.Conn, log zerolog.Logger) (servicecmd.Service, error)
	node        *nodeagent.Config // a node agent's config (its credential names it)
}

// part is one running service and the connection it owns.
type part struct {
	name    string // its connection name
	svc     servicecmd.Service
	nc      *nats.Conn
	metrics prometheus.Collector // as registered (labelled); nil: none
}

// Mesh is a running mesh.
type Mesh struct {
	opts    Options
	mu      sync.Mutex
	core    []part          // catalog, health and routers, in start order
	nodes   map[string]part // node agents by id
	gateway *part
	Gateway *gateway.Service

	reg  *prometheus.Registry // every part's metrics and the process's
	msrv *metrics.Server      // nil without MetricsListen
}

// Start brings the mesh up in dependency order and returns once every part
// is serving. On error, whatever started is stopped again.
func Start(ctx context.Context, o Options) (*Mesh, error) {
	if o.Server == nil {
		return nil, errors.New("devmesh: Options.Server is required")
	}
	m := &Mesh{opts: o, nodes: map[string]part{}, reg: metrics.NewRegistry()}
	if metrics.Enabled(o.MetricsListen) {
		// bound first: a taken port fails before any part starts
		msrv, err := metrics.Listen(ctx, o.MetricsListen)
		if err != nil {
			return nil, fmt.Errorf("devmesh: %w", err)
		}
		m.msrv = msrv
		msrv.Serve(m.reg)
	}
	if err := m.start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Mesh) start(ctx context.Context) error {
	for _, s := range m.opts.specs() {
		if err := m.run(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// specs are the mesh's parts in dependency order: nodes register with the
// catalog and are routed to once health and a router watch them; the
// gateway, last, only sends where routers already listen.
func (o Options) specs() []spec {
	ccfg, hcfg := catalog.DefaultConfig(), health.DefaultConfig()
	ccfg.Subjects, hcfg.Subjects = o.Subjects, o.Subjects
	tune(o.Catalog, &ccfg)
	tune(o.Health, &hcfg)
	specs := []spec{
		{svcCatalog, coreID, func(nc *nats.Conn, l zerolog.Logger) (servicecmd.Service, error) { return catalog.New(nc, ccfg, l) }, nil},
		{svcHealth, coreID, func(nc *nats.Conn, l zerolog.Logger) (servicecmd.Service, error) { return health.New(nc, hcfg, l) }, nil},
	}
	for i := range max(o.Routers, 1) {
		// A config of its own per replica: none shares another's maps.
		id := strconv.Itoa(i + 1)
		rcfg := router.DefaultConfig()
		rcfg.Subjects, rcfg.InstanceID = o.Subjects, id // micro metadata names it as the logs do
		tune(o.Router, &rcfg)
		specs = append(specs, spec{svcRouter, id,
			func(nc *nats.Conn, l zerolog.Logger) (servicecmd.Service, error) { return router.New(nc, rcfg, l) }, nil})
	}
	for _, n := range o.Nodes {
		specs = append(specs, o.nodeSpec(n))
	}
	if o.Gateway != nil {
		gcfg := *o.Gateway
		gcfg.Subjects = o.Subjects
		specs = append(specs, spec{svcGateway, coreID,
			func(nc *nats.Conn, l zerolog.Logger) (servicecmd.Service, error) { return gateway.New(nc, gcfg, l) }, nil})
	}
	return specs
}

// nodeSpec is a node agent, its instance id the node id (as its command has it).
func (o Options) nodeSpec(cfg nodeagent.Config) spec {
	cfg.Subjects = o.Subjects
	return spec{service: svcNodeAgent, id: cfg.NodeID, node: &cfg, build: func(nc *nats.Conn, l zerolog.Logger) (servicecmd.Service, error) {
		return nodeagent.New(nc, cfg, l)
	}}
}

// tune applies a caller's hook to a config; a nil hook keeps it.
func tune[C any](hook func(*C), cfg *C) {
	if hook != nil {
		hook(cfg)
	}
}

// run starts one part and files it where Stop looks for it.
func (m *Mesh) run(ctx context.Context, s spec) error {
	p, err := m.startPart(ctx, s)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch s.service {
	case svcNodeAgent:
		m.nodes[s.id] = p
	case svcGateway:
		m.gateway = &p
		m.Gateway, _ = p.svc.(*gateway.Service)
	default:
		m.core = append(m.core, p)
	}
	return nil
}

// startPart builds and starts one service on its own in-process connection,
// named and logged as its command would be.
func (m *Mesh) startPart(ctx context.Context, s spec) (part, error) {
	name := servicecmd.ConnName(s.service, s.id)
	log := logging.Component(m.opts.Log, s.service).With().Str(logging.KeyInstance, s.id).Logger()
	opts := []nats.Option{nats.ErrorHandler(asyncErrors(log, name, m.opts.AsyncError)), nats.CustomInboxPrefix(servicecmd.InboxPrefix(s.service, servicecmd.InstanceName(s.service, s.id)))}
	if m.opts.Credentials != nil {
		co, err := m.opts.Credentials(s.service, s.id, s.node)
		if err != nil {
			return part{}, fmt.Errorf("devmesh: credentials of %s: %w", name, err)
		}
		opts = append(opts, co...)
	}
	nc, err := natsembed.ConnectInProcess(m.opts.Server, name, opts...)
	if err != nil {
		return part{}, err
	}
	svc, err := s.build(nc, log)
	if err == nil {
		if err = svc.Start(ctx); err != nil {
			err = errors.Join(err, svc.Stop())
		}
	}
	if err != nil {
		nc.Close()
		return part{}, fmt.Errorf("devmesh: start %s: %w", name, err)
	}
	p := part{name: name, svc: svc, nc: nc}
	if src, ok := svc.(metrics.Source); ok {
		c := metrics.Wrap(s.service, s.id, src.Metrics())
		if err := m.reg.Register(c); err != nil {
			m.stopPart(p)
			return part{}, fmt.Errorf("devmesh: metrics of %s: %w", name, err)
		}
		p.metrics = c
	}
	return p, nil
}

// MetricsHandler answers GET /metrics with every running part's series.
func (m *Mesh) MetricsHandler() http.Handler { return metrics.Handler(m.reg) }

// MetricsURL is where the metrics are served; "" without MetricsListen.
func (m *Mesh) MetricsURL() string {
	if m.msrv == nil {
		return ""
	}
	return m.msrv.URL()
}

// forget takes a part's series out of the registry.
func (m *Mesh) forget(p part) {
	if p.metrics != nil {
		m.reg.Unregister(p.metrics)
	}
}

// AddNode starts one more node agent.
func (m *Mesh) AddNode(ctx context.Context, cfg nodeagent.Config) error {
	return m.run(ctx, m.opts.nodeSpec(cfg))
}

func (m *Mesh) takeNode(id string) (part, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.nodes[id]
	if !ok {
		return part{}, fmt.Errorf("devmesh: no node %q", id)
	}
	delete(m.nodes, id)
	return p, nil
}

// StopNode stops a node agent gracefully: it drains and deregisters.
func (m *Mesh) StopNode(id string) error {
	p, err := m.takeNode(id)
	if err != nil {
		return err
	}
	m.forget(p)
	err = p.svc.Stop()
	p.nc.Close()
	if err != nil {
		return fmt.Errorf("devmesh: stop node %s: %w", id, err)
	}
	return nil
}

// KillNode cuts a node agent's connection without any goodbye, as a crash or
// a network partition would; its goroutines are then stopped quietly.
func (m *Mesh) KillNode(id string) error {
	p, err := m.takeNode(id)
	if err != nil {
		return err
	}
	m.forget(p)
	p.nc.Close()
	_ = p.svc.Stop() // its connection is gone: nothing reaches the mesh
	return nil
}

// Stop stops every part: the gateway first (no new work), then the nodes in
// parallel (they drain), then the core services newest first.
func (m *Mesh) Stop() {
	m.mu.Lock()
	gw, nodes, core := m.gateway, m.nodes, m.core
	m.gateway, m.nodes, m.core = nil, map[string]part{}, nil
	m.mu.Unlock()
	if gw != nil {
		m.stopPart(*gw)
	}
	var wg sync.WaitGroup
	for _, p := range nodes {
		wg.Go(func() { m.stopPart(p) })
	}
	wg.Wait()
	for _, p := range slices.Backward(core) {
		m.stopPart(p)
	}
	if m.msrv != nil {
		if err := m.msrv.Close(); err != nil {
			m.opts.Log.Warn().Err(err).Msg("stop metrics listener")
		}
	}
}

// stopPart stops a service, then drains its connection so what it
// published last still reaches the server.
func (m *Mesh) stopPart(p part) {
	m.forget(p)
	if err := p.svc.Stop(); err != nil {
		m.opts.Log.Warn().Err(err).Str("part", p.name).Msg("stop")
	}
	if err := p.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.nc.Close()
	}
}

// asyncErrors logs a connection's asynchronous errors (slow consumers, a
// pipe closed by the server's shutdown) instead of nats.go's default of
// printing them to stderr.
func asyncErrors(l zerolog.Logger, part string, hear func(string, error)) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if hear != nil {
			hear(part, err)
		}
		ev := l.Warn()
		if errors.Is(err, io.ErrClosedPipe) {
			ev = l.Debug() // the embedded server is shutting down
		}
		if sub != nil {
			ev = ev.Str(logging.KeySubject, sub.Subject)
		}
		ev.Err(err).Msg("nats async error")
	}
}
