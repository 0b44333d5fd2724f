// Package devmesh composes the whole mesh in one process: an embedded
// nats-server, catalog, health, router, node agents and the gateway, each on
// its own in-process connection as if it were its own program. `fedmesh dev`,
// the end-to-end tests and the benchmarks all start the mesh through it.
package devmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/natsembed"
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
}

// stopper is any running part of the mesh.
type stopper interface{ Stop() error }

type part struct {
	name string
	svc  stopper
	nc   *nats.Conn
}

// Mesh is a running mesh.
type Mesh struct {
	opts    Options
	mu      sync.Mutex
	parts   []part          // stopped in reverse start order
	nodes   map[string]part // node agents by id
	Gateway *gateway.Service
	Routers []*router.Service
}

// Start brings the mesh up in dependency order and returns once every part
// is serving. On error, whatever started is stopped again.
func Start(ctx context.Context, o Options) (*Mesh, error) {
	if o.Server == nil {
		return nil, errors.New("devmesh: Options.Server is required")
	}
	m := &Mesh{opts: o, nodes: map[string]part{}}
	if err := m.start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

func (m *Mesh) start(ctx context.Context) error {
	o := m.opts
	ccfg := catalog.DefaultConfig()
	ccfg.Subjects = o.Subjects
	if o.Catalog != nil {
		o.Catalog(&ccfg)
	}
	if err := m.run(ctx, "catalog", func(nc *nats.Conn, l zerolog.Logger) (stopper, error) {
		s, err := catalog.New(nc, ccfg, l)
		if err != nil {
			return nil, err
		}
		return s, s.Start(ctx)
	}); err != nil {
		return err
	}
	hcfg := health.DefaultConfig()
	hcfg.Subjects = o.Subjects
	if o.Health != nil {
		o.Health(&hcfg)
	}
	if err := m.run(ctx, "health", func(nc *nats.Conn, l zerolog.Logger) (stopper, error) {
		s, err := health.New(nc, hcfg, l)
		if err != nil {
			return nil, err
		}
		return s, s.Start(ctx)
	}); err != nil {
		return err
	}
	routers := max(o.Routers, 1)
	for i := 0; i < routers; i++ {
		rcfg := router.DefaultConfig()
		rcfg.Subjects = o.Subjects
		if o.Router != nil {
			o.Router(&rcfg)
		}
		if err := m.run(ctx, fmt.Sprintf("router-%d", i+1), func(nc *nats.Conn, l zerolog.Logger) (stopper, error) {
			s, err := router.New(nc, rcfg, l)
			if err != nil {
				return nil, err
			}
			if err := s.Start(ctx); err != nil {
				return nil, err
			}
			m.Routers = append(m.Routers, s)
			return s, nil
		}); err != nil {
			return err
		}
	}
	for _, n := range o.Nodes {
		if err := m.AddNode(ctx, n); err != nil {
			return err
		}
	}
	if o.Gateway != nil {
		gcfg := *o.Gateway
		gcfg.Subjects = o.Subjects
		if err := m.run(ctx, "gateway", func(nc *nats.Conn, l zerolog.Logger) (stopper, error) {
			s, err := gateway.New(nc, gcfg, l)
			if err != nil {
				return nil, err
			}
			if err := s.Start(ctx); err != nil {
				return nil, err
			}
			m.Gateway = s
			return s, nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// run starts one part on its own in-process connection.
func (m *Mesh) run(ctx context.Context, name string, start func(*nats.Conn, zerolog.Logger) (stopper, error)) error {
	p, err := m.startPart(name, start)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.parts = append(m.parts, p)
	m.mu.Unlock()
	return nil
}

func (m *Mesh) startPart(name string, start func(*nats.Conn, zerolog.Logger) (stopper, error)) (part, error) {
	nc, err := natsembed.ConnectInProcess(m.opts.Server, "fedmesh-"+name, nats.ErrorHandler(asyncErrors(logging.Component(m.opts.Log, name))))
	if err != nil {
		return part{}, err
	}
	svc, err := start(nc, logging.Component(m.opts.Log, name))
	if err != nil {
		if svc != nil {
			_ = svc.Stop()
		}
		nc.Close()
		return part{}, fmt.Errorf("devmesh: start %s: %w", name, err)
	}
	return part{name: name, svc: svc, nc: nc}, nil
}

// AddNode starts one more node agent.
func (m *Mesh) AddNode(ctx context.Context, cfg nodeagent.Config) error {
	cfg.Subjects = m.opts.Subjects
	p, err := m.startPart("node-"+cfg.NodeID, func(nc *nats.Conn, l zerolog.Logger) (stopper, error) {
		s, err := nodeagent.New(nc, cfg, l)
		if err != nil {
			return nil, err
		}
		return s, s.Start(ctx)
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.nodes[cfg.NodeID] = p
	m.mu.Unlock()
	return nil
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
	err = p.svc.Stop()
	p.nc.Close()
	return err
}

// KillNode cuts a node agent's connection without any goodbye, as a crash or
// a network partition would; its goroutines are then stopped quietly.
func (m *Mesh) KillNode(id string) error {
	p, err := m.takeNode(id)
	if err != nil {
		return err
	}
	p.nc.Close()
	_ = p.svc.Stop() // its connection is gone: nothing reaches the mesh
	return nil
}

// Stop stops every part, newest first, then closes their connections.
func (m *Mesh) Stop() {
	m.mu.Lock()
	nodes := m.nodes
	m.nodes = map[string]part{}
	parts := m.parts
	m.parts = nil
	m.mu.Unlock()
	// Gateway first (no new work), then nodes drain, then the core services.
	for i := len(parts) - 1; i >= 0 && parts[i].name == "gateway"; i-- {
		stopPart(m.opts.Log, parts[i])
		parts = parts[:i]
	}
	var wg sync.WaitGroup
	for _, p := range nodes {
		wg.Add(1)
		go func(p part) { defer wg.Done(); stopPart(m.opts.Log, p) }(p)
	}
	wg.Wait()
	for i := len(parts) - 1; i >= 0; i-- {
		stopPart(m.opts.Log, parts[i])
	}
}

func stopPart(l zerolog.Logger, p part) {
	if err := p.svc.Stop(); err != nil {
		l.Warn().Err(err).Str("part", p.name).Msg("stop")
	}
	if err := p.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.nc.Close()
	}
}

// asyncErrors logs a connection's asynchronous errors (slow consumers, a
// pipe closed by the server's shutdown) instead of nats.go's default of
// printing them to stderr.
func asyncErrors(l zerolog.Logger) nats.ErrHandler {
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		ev := l.Warn()
		if errors.Is(err, io.ErrClosedPipe) {
			ev = l.Debug() // the embedded server is shutting down
		}
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Err(err).Msg("nats async error")
	}
}
