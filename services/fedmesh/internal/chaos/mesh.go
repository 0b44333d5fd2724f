package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// serverConf is deploy/nats/cluster-node.conf.tmpl, filled in here so the
// run needs only the binaries.
const serverConf = `server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d

jetstream {
  store_dir: "%s"
  max_memory_store: 256MB
  max_file_store: 2GB
}

cluster {
  name: fedmesh
  listen: 127.0.0.1:%d
  routes: [%s]
}
`

// model is the one model every node serves; the synthetic answer depends on it.
const (
	model      = "m1"
	capability = "generate"
)

type server struct {
	name                  string
	port, http, routePort int
	proc                  *proc
	url                   string
}

// node is one synthetic node agent.
type node struct {
	id     string
	server int
	delay  time.Duration
	proc   *proc
}

// mesh is everything the run started.
type mesh struct {
	dir     string
	procs   procs
	servers []*server
	catalog []*proc
	health  []*proc
	routers []*proc
	nodes   []*node
	space   subject.Space
}

// nodeByID returns the node with that id, or nil.
func (m *mesh) nodeByID(id string) *node {
	for _, n := range m.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (m *mesh) url(i int) string { return m.servers[i%len(m.servers)].url }

// urls lists every server, the i-th first (clients reconnect down the list).
func (m *mesh) urls(i int) string {
	out := make([]string, 0, len(m.servers))
	for j := range m.servers {
		out = append(out, m.url(i+j))
	}
	return strings.Join(out, ",")
}

// startMesh brings up 3 servers, the buckets (R3), 2 catalogs, 2 health,
// 2 routers and the nodes, and waits until every node is routable.
func startMesh(ctx context.Context, o *Options, rng *rand.Rand, logf func(string, ...any)) (*mesh, error) {
	m := &mesh{dir: o.workDir, space: subject.Default}
	bin := func(name string) (string, error) { return binary(o.BinDir, name) }
	natsBin, err := bin("nats-server")
	if err != nil {
		return m, err
	}
	ports, err := freePorts(9)
	if err != nil {
		return m, err
	}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[6+i]))
	}
	for i := range 3 {
		s := &server{name: fmt.Sprintf("n%d", i+1), port: ports[i], http: ports[3+i], routePort: ports[6+i]}
		s.url = fmt.Sprintf("nats://127.0.0.1:%d", s.port)
		conf := filepath.Join(m.dir, s.name+".conf")
		body := fmt.Sprintf(serverConf, s.name, s.port, s.http, filepath.Join(m.dir, "js-"+s.name), s.routePort, strings.Join(routes, ","))
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return m, err
		}
		s.proc = m.procs.add("nats-"+s.name, natsBin, filepath.Join(m.dir, "nats-"+s.name+".log"), "-c", conf)
		if err := s.proc.start(); err != nil {
			return m, err
		}
		m.servers = append(m.servers, s)
	}
	for _, s := range m.servers {
		if err := waitUntil(ctx, 30*time.Second, func() bool { return healthz(s) }); err != nil {
			return m, fmt.Errorf("nats server %s never became healthy: %w", s.name, err)
		}
	}
	logf("cluster of 3 nats-servers up (%s)", m.urls(0))
	if err := m.ensureBuckets(ctx); err != nil {
		return m, err
	}
	svc := func(kind string, i, srv int, extra ...string) (*proc, error) {
		path, err := bin(kind)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s-%d", kind, i+1)
		args := append([]string{"--nats-url", m.url(srv), "--log-format", "json", "--log-level", "warn"}, extra...)
		p := m.procs.add(name, path, filepath.Join(m.dir, name+".log"), args...)
		return p, p.start()
	}
	var catalogArgs []string
	if o.NodeTTL > 0 {
		catalogArgs = []string{"--node-ttl", o.NodeTTL.String()}
	}
	for i, srv := range []int{0, 1} {
		p, err := svc("catalog", i, srv, catalogArgs...)
		if err != nil {
			return m, err
		}
		m.catalog = append(m.catalog, p)
	}
	var healthArgs []string
	if o.ResetTimeout > 0 {
		healthArgs = []string{"--reset-timeout", o.ResetTimeout.String()}
	}
	for i, srv := range []int{1, 2} {
		p, err := svc("health", i, srv, healthArgs...)
		if err != nil {
			return m, err
		}
		m.health = append(m.health, p)
	}
	for i, srv := range []int{0, 2} {
		p, err := svc("router", i, srv)
		if err != nil {
			return m, err
		}
		m.routers = append(m.routers, p)
	}
	agent, err := bin("nodeagent")
	if err != nil {
		return m, err
	}
	for i := range o.Nodes {
		// Lengths vary per request, alike on every node (so streams can
		// move between nodes); speeds vary per node.
		n := &node{id: fmt.Sprintf("node-%d", i+1), server: i % 3,
			delay: o.MinTokenDelay + time.Duration(rng.Int64N(int64(o.MaxTokenDelay-o.MinTokenDelay)+1))}
		n.delay = n.delay.Round(time.Millisecond)
		conf := filepath.Join(m.dir, n.id+".yaml")
		yaml := fmt.Sprintf("node_id: %s\nregion: r%d\nmax_concurrency: %d\nmodels:\n  - model_id: %s\n    capabilities: [%s]\nbackend:\n  type: synthetic\n  tokens: %d\n  tokens_max: %d\n  token_delay: %s\n",
			n.id, i%3+1, o.MaxConcurrency, model, capability, o.MinTokens, o.MaxTokens, n.delay)
		if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
			return m, err
		}
		n.proc = m.procs.add(n.id, agent, filepath.Join(m.dir, n.id+".log"),
			"--nats-url", m.url(n.server), "--log-format", "json", "--log-level", "warn", "--config", conf)
		if err := n.proc.start(); err != nil {
			return m, err
		}
		m.nodes = append(m.nodes, n)
	}
	return m, nil
}

// healthz is the server's /healthz (JetStream included) answering ok.
func healthz(s *server) bool {
	c := http.Client{Timeout: time.Second}
	r, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.http))
	if err != nil {
		return false
	}
	r.Body.Close()
	return r.StatusCode == http.StatusOK
}

// ensureBuckets creates the three buckets with 3 replicas before any
// service starts (services open what exists).
func (m *mesh) ensureBuckets(ctx context.Context) error {
	nc, err := nats.Connect(m.urls(0), nats.Name("chaos-setup"))
	if err != nil {
		return fmt.Errorf("connect for bucket setup: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var last error
	err = waitUntil(ctx, 30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, last = buckets.Ensure(c, js, buckets.Options{Replicas: 3})
		return last == nil
	})
	if err != nil {
		return fmt.Errorf("create R3 buckets: %w (last: %v)", err, last)
	}
	return nil
}

// metaLeader is the index of the server leading the JetStream meta group,
// read from a live server's /jsz.
func (m *mesh) metaLeader() (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	for _, s := range m.servers {
		if !s.proc.running() {
			continue
		}
		r, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", s.http))
		if err != nil {
			continue
		}
		var jsz struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(r.Body).Decode(&jsz)
		r.Body.Close()
		if err != nil || jsz.Meta.Leader == "" {
			continue
		}
		for i, t := range m.servers {
			if t.name == jsz.Meta.Leader {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("no server names a JetStream meta leader")
}

// countInstances counts the replies to $SRV.PING.<service> within wait.
func countInstances(nc *nats.Conn, service string, wait time.Duration) int {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.PING."+service, inbox, nil); err != nil {
		return 0
	}
	n := 0
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ch:
			n++
		case <-t.C:
			return n
		}
	}
}

// eligible is how many nodes the router that answers would route to now,
// and why each other one is not ("node-4: circuit open").
func (m *mesh) eligible(nc *nats.Conn) (int, []string, error) {
	msg := nats.NewMsg(m.space.RouterCandidates())
	msg.Data = []byte(capability)
	r, err := nc.RequestMsg(msg, 2*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("candidates: %w", err)
	}
	if code := r.Header.Get("Nats-Service-Error-Code"); code != "" {
		return 0, nil, fmt.Errorf("candidates: error %s %s", code, r.Header.Get("Nats-Service-Error"))
	}
	var resp api.CandidatesResponse
	if err := json.Unmarshal(r.Data, &resp); err != nil {
		return 0, nil, fmt.Errorf("candidates: %w", err)
	}
	n := 0
	var not []string
	for _, c := range resp.Candidates {
		if c.Eligible {
			n++
		} else {
			not = append(not, c.NodeID+": "+cmp.Or(c.Reason, c.RejectedBy))
		}
	}
	return n, not, nil
}

// strength is what is up: instances answering $SRV.PING per service and
// the nodes eligible at one router.
type strength struct {
	catalog, health, routers, nodes, eligible int
	ineligible                                []string // "node: why" of the nodes in the catalog not eligible
}

func (s strength) String() string {
	out := fmt.Sprintf("%d catalogs, %d health, %d routers, %d node agents, %d eligible nodes", s.catalog, s.health, s.routers, s.nodes, s.eligible)
	if len(s.ineligible) > 0 {
		out += " (not eligible: " + strings.Join(s.ineligible, ", ") + ")"
	}
	return out
}

func (m *mesh) strength(nc *nats.Conn) strength {
	s := strength{
		catalog: countInstances(nc, "fed-catalog", 300*time.Millisecond),
		health:  countInstances(nc, "fed-health", 300*time.Millisecond),
		routers: countInstances(nc, "fed-router", 300*time.Millisecond),
		nodes:   countInstances(nc, "fed-node", 300*time.Millisecond),
	}
	s.eligible, s.ineligible, _ = m.eligible(nc)
	return s
}

func (m *mesh) full(s strength) bool {
	return s.catalog == len(m.catalog) && s.health == len(m.health) && s.routers == len(m.routers) &&
		s.nodes == len(m.nodes) && s.eligible == len(m.nodes)
}

// waitUntil polls cond every 100 ms until it holds, ctx ends or limit passes.
func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v", errNotReady, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
