package benchrouting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Model is the one model every server serves.
const Model = "llama-3-8b"

// Rig settings.
const (
	// minHeartbeat floors the scaled heartbeat interval: three missed
	// ones make a node unhealthy, and a loaded 2-core machine can stall a
	// goroutine for tens of milliseconds.
	minHeartbeat = 100 * time.Millisecond
	// minSweep floors the router's scaled sweep interval.
	minSweep = 50 * time.Millisecond
	// readyTimeout bounds the wait for every node to be routable.
	readyTimeout = 20 * time.Second
	// nodeDrain bounds a node agent's drain at the end of a run: every
	// request has ended by then, so it only covers a straggler.
	nodeDrain = 2 * time.Second
)

// rig is one run's fleet and mesh: fresh simulated servers (cold prefix
// caches), a fresh nats-server and buckets, a router with the run's
// strategy, and a client over loopback TCP. Nothing is shared between
// runs, so each strategy starts from the same state.
type rig struct {
	o       *Options
	servers []*simserver.Server
	ids     []string
	dir     string
	ns      *server.Server
	mesh    *devmesh.Mesh
	nc      *nats.Conn
	c       *client.Client
}

func startRig(ctx context.Context, o *Options, strategy string) (_ *rig, err error) {
	r := &rig{o: o, ids: nodeIDs(o.Fleet)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	nodes := make([]nodeagent.Config, len(o.Fleet))
	for i, s := range o.Fleet {
		p := s.Profile
		p.PrefixCacheBlocks = cacheBlocks(p, o.CacheFraction)
		srv, err := simserver.Start(ctx, simserver.Config{Addr: "127.0.0.1:0", Profile: p, TimeScale: o.TimeScale,
			Seed: o.Seed + uint64(i), Models: []string{Model}, Log: zerolog.Nop()})
		if err != nil {
			return nil, fmt.Errorf("benchrouting: simserver for %s: %w", r.ids[i], err)
		}
		r.servers = append(r.servers, srv)
		if nodes[i], err = nodeConfig(r.ids[i], s, srv); err != nil {
			return nil, err
		}
	}
	if r.dir, err = os.MkdirTemp("", "fedmesh-bench-routing-*"); err != nil {
		return nil, err
	}
	if r.ns, err = natsembed.Start(natsembed.Options{Port: -1, StoreDir: r.dir, Name: "fedmesh-bench-routing"}); err != nil {
		return nil, err
	}
	policy := record.DefaultPolicy()
	policy.Strategy = strategy
	// The control plane runs on the simulated clock too, so the router
	// learns as often per simulated second as it would at 1×: heartbeats
	// (which pace health's fed_health writes, the router's TTFT and state
	// data) and the degraded threshold (a success slower than 1 s of
	// simulated time) are divided by the scale.
	hb := max(minHeartbeat, scaled(nodeagent.DefaultHeartbeatInterval, o.TimeScale))
	degraded := scaled(health.DefaultDegradedLatency, o.TimeScale)
	// the router's sweep recomputes the fleet's median TTFT, the prior of
	// nodes without data: at 1 s real it held the 200 ms default (4 s
	// simulated) over the first 20 simulated seconds, so no node without
	// data got a request then
	sweep := max(minSweep, scaled(router.DefaultSweepInterval, o.TimeScale))
	for i := range nodes {
		nodes[i].HeartbeatInterval = hb
	}
	r.mesh, err = devmesh.Start(ctx, devmesh.Options{Server: r.ns, Log: zerolog.Nop(), Nodes: nodes,
		Router: func(c *router.Config) { c.Policy, c.SweepInterval = policy, sweep },
		Health: func(c *health.Config) { c.HeartbeatInterval, c.DegradedLatency = hb, degraded },
	})
	if err != nil {
		return nil, fmt.Errorf("benchrouting: start mesh: %w", err)
	}
	if r.nc, err = nats.Connect(r.ns.ClientURL(), nats.Name("fedmesh-bench-routing")); err != nil {
		return nil, fmt.Errorf("benchrouting: connect client: %w", err)
	}
	if r.c, err = client.New(r.nc); err != nil {
		return nil, err
	}
	if err := r.waitRoutable(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// scaled is a real-time threshold for simulated duration d.
func scaled(d time.Duration, scale float64) time.Duration {
	return max(time.Millisecond, time.Duration(float64(d)/scale))
}

// nodeConfig is a node agent in front of srv through the OpenAI backend,
// scraping the server's load as often as the agent allows.
func nodeConfig(id string, s Server, srv *simserver.Server) (nodeagent.Config, error) {
	b, err := openai.New(openai.Config{BaseURL: srv.URL(), Continue: true, MaxConns: s.MaxConcurrency})
	if err != nil {
		return nodeagent.Config{}, fmt.Errorf("benchrouting: backend of %s: %w", id, err)
	}
	c := nodeagent.DefaultConfig()
	c.NodeID, c.Region, c.Zone = id, "local", "local-a"
	c.GPU = s.Profile.Name != simserver.CPU.Name
	c.MaxConcurrency = s.MaxConcurrency
	c.DrainTimeout = nodeDrain
	c.Models = []record.Model{{ModelID: Model, Name: "Llama 3 8B Instruct", Capabilities: []string{wire.CapGenerate}, Parameters: "8B"}}
	c.Labels = map[string]string{"simserver": s.Profile.Name}
	c.Backend = b
	c.MetricsURL = srv.URL() + "/metrics"
	c.MetricsInterval = nodeagent.MinMetricsInterval
	c.Warmup = true // as a config file's openai node: every strategy starts from the same measurements
	return c, nil
}

// waitRoutable waits until the router finds every node eligible.
func (r *rig) waitRoutable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := 0
	for {
		n, err := r.eligible(ctx)
		if err == nil && n == len(r.ids) {
			return nil
		}
		last = n
		select {
		case <-ctx.Done():
			return fmt.Errorf("benchrouting: %d of %d nodes routable after %v (last error: %v)", last, len(r.ids), readyTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *rig) eligible(ctx context.Context) (int, error) {
	msg := nats.NewMsg(subject.Default.RouterCandidates())
	msg.Header.Set(wire.HdrCapability, wire.CapGenerate)
	resp, err := r.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return 0, err
	}
	if werr := wire.ErrorFromHeader(resp.Header); werr != nil {
		return 0, werr
	}
	var cr api.CandidatesResponse
	if err := json.Unmarshal(resp.Data, &cr); err != nil {
		return 0, fmt.Errorf("candidates: %w", err)
	}
	n := 0
	for _, c := range cr.Candidates {
		if c.Eligible {
			n++
		}
	}
	return n, nil
}

// prefix reads every server's prefix-cache counters.
func (r *rig) prefix() ([]prefixCounters, error) {
	out := make([]prefixCounters, len(r.servers))
	for i, s := range r.servers {
		c, err := scrapePrefix(s.Metrics())
		if err != nil {
			return nil, fmt.Errorf("benchrouting: metrics of %s: %w", r.ids[i], err)
		}
		out[i] = c
	}
	return out, nil
}

// close stops what started: the client, the mesh (nodes drain), the
// nats-server, then the model servers. A second call does nothing.
func (r *rig) close() error {
	var errs []error
	if r.c != nil {
		errs = append(errs, r.c.Close())
		r.c = nil
	}
	if r.nc != nil {
		r.nc.Close()
		r.nc = nil
	}
	if r.mesh != nil {
		r.mesh.Stop()
		r.mesh = nil
	}
	if r.ns != nil {
		r.ns.Shutdown()
		r.ns.WaitForShutdown()
		r.ns = nil
	}
	for _, s := range r.servers {
		errs = append(errs, s.Stop())
	}
	r.servers = nil
	if r.dir != "" {
		errs = append(errs, os.RemoveAll(r.dir))
		r.dir = ""
	}
	return errors.Join(errs...)
}
