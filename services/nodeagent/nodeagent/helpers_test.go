package nodeagent

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// fakeCatalog answers fed.catalog.register/deregister and records them.
// Set before it starts: kv, to write each accepted record to fed_catalog as
// the real catalog does; conflicts, to answer that many registrations with
// the catalog's 409 first.
type fakeCatalog struct {
	kv        jetstream.KeyValue
	conflicts int

	mu           sync.Mutex
	registered   []record.Node
	refused      int // 409s sent
	deregistered []api.DeregisterRequest
}

func (f *fakeCatalog) refusals() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused
}

func (f *fakeCatalog) regs() []record.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]record.Node(nil), f.registered...)
}

func (f *fakeCatalog) deregs() []api.DeregisterRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.DeregisterRequest(nil), f.deregistered...)
}

func startCatalog(t *testing.T, nc *nats.Conn) *fakeCatalog { return startCatalogTB(t, nc) }

func startCatalogTB(t testing.TB, nc *nats.Conn) *fakeCatalog {
	t.Helper()
	return startFakeCatalog(t, nc, &fakeCatalog{})
}

func startFakeCatalog(t testing.TB, nc *nats.Conn, f *fakeCatalog) *fakeCatalog {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{Name: subject.ServiceCatalog, Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddEndpoint("register", micro.HandlerFunc(func(r micro.Request) {
		var n api.RegisterRequest
		err := json.Unmarshal(r.Data(), &n)
		if err == nil {
			err = n.Validate() // as the catalog checks a registration
		}
		if err != nil {
			_ = wire.RespondError(nc, r.Reply(), wire.Errorf(wire.CodeBadRequest, "%v", err))
			return
		}
		f.mu.Lock()
		if f.refused < f.conflicts {
			f.refused++
			f.mu.Unlock()
			// The real catalog's words, node_ttl hint included.
			_ = wire.RespondError(nc, r.Reply(), wire.Errorf(wire.CodeConflict,
				"node_id %q is registered by another live instance (%q); it expires %s after its last heartbeat",
				n.NodeID, "old-instance", 10*time.Second))
			return
		}
		f.registered = append(f.registered, n)
		f.mu.Unlock()
		if f.kv != nil {
			data, err := json.Marshal(n)
			if err == nil {
				_, err = f.kv.Put(context.Background(), buckets.NodeKey(n.NodeID), data)
			}
			if err != nil {
				_ = wire.RespondError(nc, r.Reply(), wire.Errorf(wire.CodeInternal, "put node %s: %v", n.NodeID, err))
				return
			}
		}
		_ = r.RespondJSON(api.RegisterResponse{NodeID: n.NodeID, Subject: n.Subject})
	}), micro.WithEndpointSubject(subject.Default.CatalogRegisterBound())))
	require.NoError(t, svc.AddEndpoint("deregister", micro.HandlerFunc(func(r micro.Request) {
		var d api.DeregisterRequest
		_ = json.Unmarshal(r.Data(), &d)
		f.mu.Lock()
		f.deregistered = append(f.deregistered, d)
		f.mu.Unlock()
		_ = r.Respond([]byte("{}"))
	}), micro.WithEndpointSubject(subject.Default.CatalogDeregisterBound())))
	return f
}

// rig is a server, a fake catalog and a connection acting as router+client.
type rig struct {
	t    *testing.T
	conn func(opts ...nats.Option) *nats.Conn // a new connection to the rig's server
	nc   *nats.Conn                           // the "router" and client side
	cat  *fakeCatalog
}

func newRig(t *testing.T) *rig {
	r := newRigNoCatalog(t)
	r.cat = startCatalog(t, r.nc)
	return r
}

func newRigNoCatalog(t *testing.T) *rig {
	s := natsembed.StartForTest(t)
	return &rig{t: t, nc: natsembed.ConnectForTest(t, s),
		conn: func(opts ...nats.Option) *nats.Conn { return natsembed.ConnectForTest(t, s, opts...) }}
}

func testConfig(id string, b backend.Backend) Config {
	c := DefaultConfig()
	c.NodeID, c.Region = id, "us-west"
	c.Models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate, wire.CapCode}},
		{ModelID: "emb", Capabilities: []string{wire.CapEmbed}}}
	c.Backend = b
	c.HeartbeatInterval = 50 * time.Millisecond
	c.DrainTimeout = 5 * time.Second
	c.RegisterRetry = 20 * time.Millisecond
	return c
}

// agent starts a node agent on its own connection and stops it at the end.
func (r *rig) agent(cfg Config) (*Service, *nats.Conn) {
	r.t.Helper()
	nc := r.conn()
	s, err := New(nc, cfg, natsembed.Logger(r.t))
	require.NoError(r.t, err)
	natsembed.RunForTest(r.t, s)
	return s, nc
}

// call is one dispatch as a router sends it, with the client inbox.
type call struct {
	id     string
	status string
	ack    *nats.Msg
	sub    *nats.Subscription
}

type dispatchOpt func(h nats.Header)

func stream(h nats.Header)         { h.Set(wire.HdrStream, "true") }
func model(m string) dispatchOpt   { return func(h nats.Header) { h.Set(wire.HdrModel, m) } }
func capab(c string) dispatchOpt   { return func(h nats.Header) { h.Set(wire.HdrCapability, c) } }
func without(k string) dispatchOpt { return func(h nats.Header) { h.Del(k) } }
func deadlineIn(d time.Duration) dispatchOpt {
	return func(h nats.Header) { h.Set(wire.HdrDeadline, strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10)) }
}

var reqSeq int

func (r *rig) dispatch(node string, body string, opts ...dispatchOpt) *call {
	r.t.Helper()
	c, err := r.tryDispatch(node, body, 2*time.Second, opts...)
	require.NoError(r.t, err)
	return c
}

// tryDispatch is dispatch waiting at most wait for the ack; without one it
// returns the call (inbox subscribed) and the request's error.
func (r *rig) tryDispatch(node string, body string, wait time.Duration, opts ...dispatchOpt) (*call, error) {
	r.t.Helper()
	reqSeq++
	c := &call{id: "req-" + strconv.Itoa(reqSeq) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	inbox := nats.NewInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	require.NoError(r.t, err)
	r.t.Cleanup(func() { _ = sub.Unsubscribe() })
	c.sub = sub
	m := nats.NewMsg(subject.Default.NodeInfer(node))
	m.Data = []byte(body)
	m.Header.Set(wire.HdrRequestID, c.id)
	m.Header.Set(wire.HdrReplyTo, inbox)
	m.Header.Set(wire.HdrCapability, wire.CapGenerate)
	m.Header.Set(wire.HdrAttempt, "1")
	m.Header.Set(wire.HdrRouteScore, "0.750")
	m.Header.Set(wire.HdrDeadline, strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
	for _, o := range opts {
		o(m.Header)
	}
	c.id = m.Header.Get(wire.HdrRequestID) // an option may set its own
	// the subject of the request's privacy level, as a router sends it
	level := wire.DefaultPrivacy.String()
	if p, err := wire.ParsePrivacy(m.Header.Get(wire.HdrPrivacy)); err == nil && m.Header.Get(wire.HdrPrivacy) != "" {
		level = p.String()
	}
	if l := m.Header.Get("X-Test-Level"); l != "" { // a mislabelled dispatch
		level = l
		m.Header.Del("X-Test-Level")
	}
	m.Subject = subject.Default.NodeInferAt(node, level)
	ack, err := r.nc.RequestMsg(m, wait)
	if err != nil {
		return c, err
	}
	c.ack = ack
	c.status = ack.Header.Get(wire.HdrStatus)
	return c, nil
}

// answer reads the client inbox until the final message.
type answer struct {
	chunks []*nats.Msg
	final  *nats.Msg
}

func (a answer) text() string {
	var s string
	for _, c := range a.chunks {
		s += string(c.Data)
	}
	return s
}

func (c *call) read(t *testing.T, timeout time.Duration) answer {
	t.Helper()
	var a answer
	for {
		m, err := c.sub.NextMsg(timeout)
		require.NoError(t, err, "request %s: no final message (silence)", c.id)
		require.Equal(t, strconv.Itoa(len(a.chunks)), m.Header.Get(wire.HdrSeq), "Fed-Seq in order")
		require.Equal(t, c.id, m.Header.Get(wire.HdrRequestID))
		require.NotEmpty(t, m.Header.Get(wire.HdrNode))
		if wire.IsFinal(m) {
			a.final = m
			return a
		}
		a.chunks = append(a.chunks, m)
	}
}

// gate is a backend that emits "a", then waits for release (or ctx), then
// emits "b". It records when each request's context ended.
type gate struct {
	release  chan struct{}
	started  chan string
	canceled chan time.Time
}

func newGate() *gate {
	return &gate{release: make(chan struct{}), started: make(chan string, 64), canceled: make(chan time.Time, 64)}
}

func (g *gate) Name() string { return "gate" }

func (g *gate) Generate(ctx context.Context, call backend.Call, emit func([]byte) error) (backend.Result, error) {
	if err := emit([]byte("a")); err != nil {
		return backend.Result{}, err
	}
	g.started <- call.RequestID
	select {
	case <-g.release:
	case <-ctx.Done():
		g.canceled <- time.Now()
		return backend.Result{Tokens: 1}, ctx.Err()
	}
	return backend.Result{Tokens: 2}, emit([]byte("b"))
}

func (g *gate) waitStarted(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-g.started:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d requests reached the backend", i, n)
		}
	}
}

func codeOf(m *nats.Msg) int {
	if e := wire.ErrorFromHeader(m.Header); e != nil {
		return e.Code
	}
	return 0
}
