package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// The fake mesh plays router + nodes on a real nats-server: it answers
// fed.infer.> per the wire protocol, choosing behaviour by Fed-Model.
const (
	modelUnknown = "no-such-model" // router: 404
	modelPrivate = "private-model" // router: 403
	modelBusy    = "busy-model"    // router: 429
	modelNone    = "none-model"    // router: 503
	modelSilent  = "silent-model"  // never answers: 504 on deadline
	modelHang    = "hang-model"    // streams one chunk, then waits to be cancelled
	modelBroken  = "broken-model"  // streams one chunk, then fails with 500
	modelSplit   = "split-model"   // streams "é" cut in two chunks
	// Two finals for one request: the SDK keeps the first, the rest is late.
	modelLateRouter  = "late-router-model"  // n1 answers, then a router 504
	modelRouterFirst = "router-first-model" // a router 504, then n1 answers
	modelTwoNodes    = "two-nodes-model"    // n1 answers, then n2 answers too
	// Failures whose descriptions name internals the caller must not see.
	modelLeaky503 = "leaky-503-model" // node gpu-secret-7: 503 naming its backend URL
	modelLeaky500 = "leaky-500-model" // node gpu-secret-7: 500 with a backend traceback
	modelBadJSON  = "bad-json-model"  // node n1 answers images output that is not JSON
	modelChat     = "chat-1"
	modelEmbed    = "emb-1"
)

var streamTokens = []string{"Hello", ", ", "world", "!"}

// What the leaky models' nodes say: a node id, a backend URL, a NATS error.
const (
	leakyNode      = "gpu-secret-7"
	leakyDetail503 = "backend http://10.1.2.3:8000/v1/chat/completions unreachable: dial tcp 10.1.2.3:8000: connect: connection refused"
	leakyDetail500 = "backend http://10.1.2.3:8000 answered 500: Traceback (most recent call last): File \"/srv/vllm/engine.py\""
)

type seen struct {
	subject string
	header  nats.Header
	body    []byte
}

type fakeMesh struct {
	nc      *nats.Conn
	seen    chan seen
	cancels chan string
}

func startFakeMesh(t *testing.T, nc *nats.Conn) *fakeMesh {
	t.Helper()
	f := &fakeMesh{nc: nc, seen: make(chan seen, 64), cancels: make(chan string, 16)}
	sub, err := nc.Subscribe(subject.Default.InferAll(), f.serve)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	cs, err := nc.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) {
		select {
		case f.cancels <- subject.LastToken(m.Subject):
		default:
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cs.Unsubscribe() })

	list := api.ListResponse{Nodes: []record.Node{
		{NodeID: "n1", Region: "eu-west-1", RegisteredAt: time.Unix(1700000000, 0), Models: []record.Model{
			{ModelID: modelChat, Capabilities: []string{wire.CapGenerate}},
			{ModelID: modelEmbed, Capabilities: []string{wire.CapEmbed}}}},
		{NodeID: "n2", Region: "us-east-1", RegisteredAt: time.Unix(1700000100, 0), Models: []record.Model{
			{ModelID: modelChat, Capabilities: []string{wire.CapGenerate, wire.CapCode}}}},
	}}
	body, err := json.Marshal(list)
	require.NoError(t, err)
	svc, err := micro.AddService(nc, micro.Config{Name: subject.ServiceCatalog, Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: subject.Default.CatalogList(),
			Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(body) })}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, nc.Flush())
	return f
}

func (f *fakeMesh) serve(m *nats.Msg) {
	select {
	case f.seen <- seen{subject: m.Subject, header: m.Header, body: m.Data}:
	default:
	}
	capability := subject.Default.CapabilityOf(m.Subject)
	id := m.Header.Get(wire.HdrRequestID)
	router := wire.Reply{Inbox: m.Reply, RequestID: id}
	node := &wire.Reply{Inbox: m.Reply, RequestID: id, Node: "n1"}
	stream := m.Header.Get(wire.HdrStream) == "true"
	pub := func(msg *nats.Msg) { _ = f.nc.PublishMsg(msg) }
	switch m.Header.Get(wire.HdrModel) {
	case modelUnknown:
		pub(router.Fail(wire.CodeNotFound, "no node serves model "+modelUnknown))
		return
	case modelPrivate:
		pub(router.Fail(wire.CodePrivacy, "no node is cleared for restricted"))
		return
	case modelBusy:
		pub(router.Fail(wire.CodeOverloaded, "every node is over its concurrency"))
		return
	case modelNone:
		pub(router.Fail(wire.CodeNoCapacity, "all nodes unhealthy"))
		return
	case modelSilent:
		return
	case modelLeaky503:
		pub((&wire.Reply{Inbox: m.Reply, RequestID: id, Node: leakyNode}).Fail(wire.CodeNoCapacity, leakyDetail503))
		return
	case modelLeaky500:
		pub((&wire.Reply{Inbox: m.Reply, RequestID: id, Node: leakyNode}).Fail(wire.CodeInternal, leakyDetail500))
		return
	case modelBadJSON:
		pub(node.Done([]byte("<html>502 from http://10.1.2.3:8000</html>"), wire.DoneInfo{}))
		return
	case modelHang:
		pub(node.Chunk([]byte("first")))
		return
	case modelBroken:
		pub(node.Chunk([]byte("partial")))
		pub(node.Fail(wire.CodeInternal, "backend crashed"))
		return
	case modelLateRouter:
		f.answer(node, stream)
		pub(router.Fail(wire.CodeTimeout, "deadline passed while placing"))
		return
	case modelRouterFirst:
		pub(router.Fail(wire.CodeTimeout, "deadline passed while placing"))
		f.answer(node, stream)
		return
	case modelTwoNodes:
		f.answer(node, stream)
		f.answer(&wire.Reply{Inbox: m.Reply, RequestID: id, Node: "n2"}, stream)
		return
	case modelSplit:
		pub(node.Chunk([]byte{0xc3}))
		pub(node.Chunk([]byte{0xa9, '!'}))
		pub(node.Done(nil, wire.DoneInfo{Tokens: 2}))
		return
	}
	switch capability {
	case wire.CapGenerate, wire.CapCode:
		f.answer(node, stream)
	case wire.CapEmbed:
		pub(node.Done([]byte(`{"object":"list","data":[{"object":"embedding","embedding":[0.5,-1,2],"index":0}],"model":"emb-1"}`),
			wire.DoneInfo{Tokens: 3}))
	case wire.CapTranscribe:
		var p wire.TranscribeParams
		_ = json.Unmarshal([]byte(m.Header.Get(wire.HdrParams)), &p)
		out, _ := json.Marshal(map[string]string{"text": "heard " + string(m.Data) + " from " + p.Filename + " in " + p.Language})
		pub(node.Done(out, wire.DoneInfo{}))
	case wire.CapSynthesize:
		msg := node.Done([]byte("RIFFfakewav"), wire.DoneInfo{})
		msg.Header.Set(wire.HdrContentType, "audio/wav")
		pub(msg)
	case wire.CapImagegen:
		pub(node.Done([]byte(`{"created":1700000000,"data":[{"url":"https://example.invalid/cat.png"}]}`), wire.DoneInfo{}))
	default:
		pub(router.Fail(wire.CodeNotFound, "no node has capability "+capability))
	}
}

// answer sends node's answer of streamTokens: chunks and an empty done, or
// one whole done.
func (f *fakeMesh) answer(node *wire.Reply, stream bool) {
	if stream {
		for _, tok := range streamTokens {
			_ = f.nc.PublishMsg(node.Chunk([]byte(tok)))
		}
		_ = f.nc.PublishMsg(node.Done(nil, wire.DoneInfo{Tokens: len(streamTokens), TTFTMs: 1}))
		return
	}
	_ = f.nc.PublishMsg(node.Done([]byte(strings.Join(streamTokens, "")), wire.DoneInfo{Tokens: len(streamTokens), LatencyMs: 3}))
}

// next returns the next request the fake mesh received.
func (f *fakeMesh) next(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-f.seen:
		return s
	case <-time.After(natsembed.WaitFor):
		t.Fatal("the mesh received no request")
		return seen{}
	}
}

// nextCancel returns the request id of the next fed.cancel.<id> the mesh
// received; none in time fails the test with missing.
func (f *fakeMesh) nextCancel(t *testing.T, missing string) string {
	t.Helper()
	select {
	case id := <-f.cancels:
		return id
	case <-time.After(natsembed.WaitFor):
		t.Fatal(missing)
		return ""
	}
}

const (
	keyAcme    = "sk-acme-test"
	keyLimited = "sk-limited-test"
	keyOpen    = "sk-open-test"
)

// env is a gateway on 127.0.0.1:0 in front of the fake mesh.
type env struct {
	gw     *Service
	mesh   *fakeMesh
	gwConn *nats.Conn
	base   string
}

func newEnv(t *testing.T, mutate ...func(*Config)) *env {
	t.Helper()
	return newEnvLogging(t, natsembed.Logger(t), mutate...)
}

// newEnvLogging is newEnv with the gateway logging to log.
func newEnvLogging(t *testing.T, log zerolog.Logger, mutate ...func(*Config)) *env {
	t.Helper()
	srv := natsembed.StartForTest(t)
	mesh := startFakeMesh(t, natsembed.ConnectForTest(t, srv))
	gwConn := natsembed.ConnectForTest(t, srv)
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Timeout = 3 * time.Second
	cfg.ShutdownGrace = time.Second
	cfg.Keys = map[string]Tenant{
		keyAcme:    {ID: "acme", Privacy: "internal", Regions: []string{"eu-west-1", "eu-central-1"}},
		keyLimited: {ID: "limited", RequestsPerSecond: 0.5, Burst: 1},
		keyOpen:    {ID: "open"},
	}
	for _, m := range mutate {
		m(&cfg)
	}
	gw, err := New(gwConn, cfg, log)
	require.NoError(t, err)
	natsembed.RunForTest(t, gw)
	return &env{gw: gw, mesh: mesh, gwConn: gwConn, base: "http://" + gw.Addr()}
}

// do sends an HTTP request with key (none when "") and extra headers.
func (e *env) do(t *testing.T, method, path, key, body string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func decode[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	var v T
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	return v
}
