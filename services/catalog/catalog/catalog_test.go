package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type env struct {
	t  *testing.T
	nc *nats.Conn
	kv jetstream.KeyValue
	sp subject.Space
}

func startCatalog(t *testing.T, nc *nats.Conn, mod func(*Config)) *Service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeTTL = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.WarnLevel)
	s, err := New(nc, cfg, log)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { require.NoError(t, s.Stop()) })
	return s
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	startCatalog(t, nc, mod)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), buckets.Catalog)
	require.NoError(t, err)
	return &env{t: t, nc: nc, kv: kv, sp: subject.Default}
}

// call sends a request and returns the body, or the micro error code and description.
func (e *env) call(subj string, body any) ([]byte, int, string) {
	e.t.Helper()
	var data []byte
	switch b := body.(type) {
	case []byte:
		data = b
	case string:
		data = []byte(b)
	default:
		var err error
		data, err = json.Marshal(body)
		require.NoError(e.t, err)
	}
	msg, err := e.nc.Request(subj, data, 5*time.Second)
	require.NoError(e.t, err)
	if c := msg.Header.Get(wire.HdrServiceErrorCode); c != "" {
		code, _ := strconv.Atoi(c)
		return nil, code, msg.Header.Get(wire.HdrServiceError)
	}
	return msg.Data, 0, ""
}

func node(id, instance string, models ...record.Model) map[string]any {
	if len(models) == 0 {
		models = []record.Model{{ModelID: "llama-3-8b", Name: "Llama 3", Version: "3.0",
			Capabilities: []string{wire.CapGenerate, wire.CapCode}, Parameters: "8B", Quantization: "q4"}}
	}
	return map[string]any{
		"node_id": id, "instance_id": instance, "region": "eu-west-1", "zone": "eu-west-1a",
		"models": models, "gpu": true, "cost": 0.3, "clearance": "confidential",
		"max_concurrency": 4, "labels": map[string]string{"rack": "r1"}, "agent_version": "1.2.3",
	}
}

func (e *env) register(n map[string]any) api.RegisterResponse {
	e.t.Helper()
	body, code, desc := e.call(e.sp.CatalogRegister(), n)
	require.Zero(e.t, code, "register %v: %s", n["node_id"], desc)
	var r api.RegisterResponse
	require.NoError(e.t, json.Unmarshal(body, &r))
	return r
}

func (e *env) heartbeat(id, instance string) {
	e.t.Helper()
	b, _ := json.Marshal(record.Heartbeat{NodeID: id, InstanceID: instance, Time: time.Now(), MaxConcurrency: 4})
	require.NoError(e.t, e.nc.Publish(e.sp.Heartbeat(id), b))
}

func (e *env) find(capability, model string) []api.Endpoint {
	e.t.Helper()
	body, code, desc := e.call(e.sp.CatalogFind(), api.FindRequest{Capability: capability, Model: model})
	require.Zero(e.t, code, desc)
	var r api.FindResponse
	require.NoError(e.t, json.Unmarshal(body, &r))
	return r.Endpoints
}

func (e *env) listIDs() []string {
	e.t.Helper()
	body, code, desc := e.call(e.sp.CatalogList(), "")
	require.Zero(e.t, code, desc)
	var r api.ListResponse
	require.NoError(e.t, json.Unmarshal(body, &r))
	ids := []string{}
	for _, n := range r.Nodes {
		ids = append(ids, n.NodeID)
	}
	return ids
}

func TestRegisterStoresRecordWithDesignFieldNames(t *testing.T) {
	e := newEnv(t, nil)
	r := e.register(node("gpu-1", "i1"))
	assert.Equal(t, "gpu-1", r.NodeID)
	assert.Equal(t, "fed.node.gpu-1.infer", r.Subject)
	assert.False(t, r.Replaced)

	entry, err := e.kv.Get(context.Background(), "nodes.gpu-1")
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(entry.Value(), &raw))
	for _, f := range []string{"node_id", "region", "zone", "subject", "models", "gpu", "cost", "clearance",
		"max_concurrency", "labels", "agent_version", "registered_at"} {
		assert.Contains(t, raw, f)
	}
	assert.Equal(t, "fed.node.gpu-1.infer", raw["subject"])
	assert.Equal(t, "confidential", raw["clearance"])
	assert.Equal(t, 0.3, raw["cost"])
	m := raw["models"].([]any)[0].(map[string]any)
	for _, f := range []string{"model_id", "name", "version", "capabilities", "parameters", "quantization"} {
		assert.Contains(t, m, f)
	}
	var rec record.Node
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	assert.WithinDuration(t, time.Now(), rec.RegisteredAt, 5*time.Second)

	// Re-registering the same instance replaces models and capabilities.
	n := node("gpu-1", "i1", record.Model{ModelID: "whisper", Capabilities: []string{wire.CapTranscribe}})
	r = e.register(n)
	assert.True(t, r.Replaced)
	require.Eventually(t, func() bool { return len(e.find(wire.CapTranscribe, "")) == 1 }, 3*time.Second, 20*time.Millisecond)
	assert.Empty(t, e.find(wire.CapGenerate, ""))
}

func TestRegisterRejectsBadFields(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct {
		name  string
		mod   func(map[string]any)
		field string
	}{
		{"empty node id", func(n map[string]any) { n["node_id"] = "" }, "node_id"},
		{"dotted node id", func(n map[string]any) { n["node_id"] = "a.b" }, "node_id"},
		{"wildcard node id", func(n map[string]any) { n["node_id"] = "a*" }, "node_id"},
		{"missing region", func(n map[string]any) { delete(n, "region") }, "region"},
		{"bad region", func(n map[string]any) { n["region"] = "eu west" }, "region"},
		{"bad zone", func(n map[string]any) { n["zone"] = "z>" }, "zone"},
		{"bad model id", func(n map[string]any) {
			n["models"] = []record.Model{{ModelID: "m.1", Capabilities: []string{"generate"}}}
		}, "models[0].model_id"},
		{"duplicate model id", func(n map[string]any) {
			n["models"] = []record.Model{{ModelID: "m", Capabilities: []string{"generate"}}, {ModelID: "m", Capabilities: []string{"embed"}}}
		}, "models[1].model_id"},
		{"no models", func(n map[string]any) { n["models"] = []record.Model{} }, "models"},
		{"model without capability", func(n map[string]any) {
			n["models"] = []record.Model{{ModelID: "m"}}
		}, "models[0].capabilities"},
		{"unknown capability", func(n map[string]any) {
			n["models"] = []record.Model{{ModelID: "m", Capabilities: []string{"generate", "dance"}}}
		}, "models[0].capabilities[1]"},
		{"bad custom capability", func(n map[string]any) {
			n["models"] = []record.Model{{ModelID: "m", Capabilities: []string{"custom.a.b"}}}
		}, "models[0].capabilities[0]"},
		{"bad clearance", func(n map[string]any) { n["clearance"] = "secret" }, "clearance"},
		{"cost above 1", func(n map[string]any) { n["cost"] = 1.5 }, "cost"},
		{"negative cost", func(n map[string]any) { n["cost"] = -0.1 }, "cost"},
		{"zero concurrency", func(n map[string]any) { n["max_concurrency"] = 0 }, "max_concurrency"},
		{"missing concurrency", func(n map[string]any) { delete(n, "max_concurrency") }, "max_concurrency"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := node("n1", "i1")
			c.mod(n)
			_, code, desc := e.call(e.sp.CatalogRegister(), n)
			assert.Equal(t, wire.CodeBadRequest, code, desc)
			assert.Contains(t, desc, c.field)
		})
	}
	// None of them reached the bucket.
	_, err := e.kv.Get(context.Background(), "nodes.n1")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
}

func TestMalformedBodiesGet400(t *testing.T) {
	e := newEnv(t, nil)
	for _, subj := range []string{e.sp.CatalogRegister(), e.sp.CatalogDeregister(), e.sp.CatalogFind(), e.sp.CatalogGet()} {
		for _, body := range []string{"", "{", "[1,2]", `{"node_id": 5}`, "null x"} {
			_, code, desc := e.call(subj, body)
			assert.Equal(t, wire.CodeBadRequest, code, "%s %q: %s", subj, body, desc)
		}
	}
	_, code, desc := e.call(e.sp.CatalogFind(), api.FindRequest{Capability: "nope"})
	assert.Equal(t, wire.CodeBadRequest, code)
	assert.Contains(t, desc, "capability")
}

func TestConflictWhileAliveThenReplacementWhenDead(t *testing.T) {
	// A long sweep interval keeps the dead record in place so the newcomer replaces it.
	e := newEnv(t, func(c *Config) { c.NodeTTL = 300 * time.Millisecond; c.SweepInterval = time.Hour })
	e.register(node("n1", "first"))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				e.heartbeat("n1", "first")
			}
		}
	}()
	// Past the registration grace period, heartbeats alone keep "first" alive.
	time.Sleep(400 * time.Millisecond)
	_, code, desc := e.call(e.sp.CatalogRegister(), node("n1", "second"))
	assert.Equal(t, wire.CodeConflict, code, desc)
	assert.Contains(t, desc, "n1")
	// The second instance heartbeating too must not keep the first alive.
	close(stop)
	wg.Wait()

	require.Eventually(t, func() bool {
		e.heartbeat("n1", "second")
		_, code, _ := e.call(e.sp.CatalogRegister(), node("n1", "second"))
		return code == 0
	}, 3*time.Second, 50*time.Millisecond)
	entry, err := e.kv.Get(context.Background(), "nodes.n1")
	require.NoError(t, err)
	var rec record.Node
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	assert.Equal(t, "second", rec.InstanceID)
}

func TestFindSeveralNodesAndCustomCapability(t *testing.T) {
	e := newEnv(t, nil)
	shared := record.Model{ModelID: "llama", Capabilities: []string{wire.CapGenerate}}
	for _, id := range []string{"a", "b", "c"} {
		e.register(node(id, "i-"+id, shared))
	}
	e.register(node("d", "i-d", record.Model{ModelID: "foo-1", Capabilities: []string{"custom.foo"}},
		record.Model{ModelID: "mistral", Capabilities: []string{wire.CapGenerate}}))

	require.Eventually(t, func() bool { return len(e.find(wire.CapGenerate, "")) == 4 }, 3*time.Second, 20*time.Millisecond)
	eps := e.find(wire.CapGenerate, "llama")
	for i, id := range []string{"a", "b", "c"} {
		assert.Equal(t, api.Endpoint{NodeID: id, Region: "eu-west-1", Subject: "fed.node." + id + ".infer", ModelID: "llama"}, eps[i])
	}
	assert.Len(t, e.find(wire.CapGenerate, ""), 4)
	custom := e.find("custom.foo", "")
	require.Len(t, custom, 1)
	assert.Equal(t, "d", custom[0].NodeID)
	assert.Empty(t, e.find("custom.bar", ""))
	assert.Empty(t, e.find(wire.CapEmbed, ""))
}

func TestDeregister(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		e.register(node(id, "i-"+id))
	}
	require.Eventually(t, func() bool { return len(e.listIDs()) == 3 }, 3*time.Second, 20*time.Millisecond)

	_, code, desc := e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "b", InstanceID: "someone-else"})
	assert.Equal(t, wire.CodeConflict, code, desc)
	_, code, desc = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "b", InstanceID: "i-b"})
	require.Zero(t, code, desc)
	_, code, _ = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "b"})
	assert.Equal(t, wire.CodeNotFound, code)
	_, code, _ = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "nobody"})
	assert.Equal(t, wire.CodeNotFound, code)
	_, code, _ = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "bad.id"})
	assert.Equal(t, wire.CodeBadRequest, code)

	require.Eventually(t, func() bool { return len(e.listIDs()) == 2 }, 3*time.Second, 20*time.Millisecond)
	assert.Equal(t, []string{"a", "c"}, e.listIDs())
	// Without instance_id any caller may deregister.
	_, code, desc = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "a"})
	require.Zero(t, code, desc)
	require.Eventually(t, func() bool { return len(e.listIDs()) == 1 }, 3*time.Second, 20*time.Millisecond)
}

func TestGetModel(t *testing.T) {
	e := newEnv(t, nil)
	m := record.Model{ModelID: "llama", Name: "Llama 3", Version: "3.1", Capabilities: []string{wire.CapGenerate, wire.CapCode},
		Parameters: "8B", Quantization: "q4_k_m"}
	e.register(node("b", "i", m))
	e.register(node("a", "i", m))
	e.register(node("c", "i", record.Model{ModelID: "other", Capabilities: []string{wire.CapEmbed}}))

	var r api.GetResponse
	require.Eventually(t, func() bool {
		body, code, _ := e.call(e.sp.CatalogGet(), api.GetRequest{ModelID: "llama"})
		return code == 0 && json.Unmarshal(body, &r) == nil && len(r.Nodes) == 2
	}, 3*time.Second, 20*time.Millisecond)
	assert.Equal(t, m, r.Model)
	assert.Equal(t, []string{"a", "b"}, r.Nodes)

	_, code, desc := e.call(e.sp.CatalogGet(), api.GetRequest{ModelID: "ghost"})
	assert.Equal(t, wire.CodeNotFound, code)
	assert.Contains(t, desc, "ghost")
	_, code, _ = e.call(e.sp.CatalogGet(), api.GetRequest{ModelID: "x>y"})
	assert.Equal(t, wire.CodeBadRequest, code)
}

func TestSilentNodesExpireAfterTTL(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NodeTTL = 300 * time.Millisecond })
	e.register(node("alive", "i"))
	e.register(node("silent", "i"))
	e.heartbeat("silent", "i")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				e.heartbeat("alive", "i")
				// Malformed heartbeats change nothing.
				_ = e.nc.Publish(e.sp.Heartbeat("silent"), []byte("{garbage"))
				_ = e.nc.Publish(e.sp.Heartbeat("silent"), []byte(`{"node_id":"alive"}`))
			}
		}
	}()
	require.Eventually(t, func() bool {
		ids := e.listIDs()
		return len(ids) == 1 && ids[0] == "alive"
	}, 3*time.Second, 20*time.Millisecond)
	_, err := e.kv.Get(context.Background(), "nodes.silent")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	// It stays while it heartbeats, well past the TTL.
	time.Sleep(600 * time.Millisecond)
	assert.Equal(t, []string{"alive"}, e.listIDs())

	close(stop)
	wg.Wait()
	require.Eventually(t, func() bool { return len(e.listIDs()) == 0 }, 3*time.Second, 20*time.Millisecond)
}

func TestTwoInstancesShareTheBucket(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc1 := natsembed.ConnectForTest(t, srv)
	nc2 := natsembed.ConnectForTest(t, srv)
	startCatalog(t, nc1, nil)
	startCatalog(t, nc2, nil)
	e := &env{t: t, nc: natsembed.ConnectForTest(t, srv), sp: subject.Default}

	// Racing registrations of distinct nodes all land; the same node from two
	// instances at once gives exactly one winner.
	var wg sync.WaitGroup
	codes := make([]int, 10)
	for i := range 10 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, code, _ := e.call(e.sp.CatalogRegister(), node(fmt.Sprintf("n%d", i), "i"))
			assert.Zero(t, code)
		}()
		go func() {
			defer wg.Done()
			_, codes[i], _ = e.call(e.sp.CatalogRegister(), node("contested", fmt.Sprintf("inst-%d", i)))
		}()
	}
	wg.Wait()
	wins := 0
	for _, c := range codes {
		if c == 0 {
			wins++
		} else {
			assert.Equal(t, wire.CodeConflict, c)
		}
	}
	assert.Equal(t, 1, wins)
	// Both replicas answer the same list (whichever one the queue group picks).
	require.Eventually(t, func() bool {
		for range 6 {
			if len(e.listIDs()) != 11 {
				return false
			}
		}
		return true
	}, 3*time.Second, 20*time.Millisecond)
}

func TestConfigValidation(t *testing.T) {
	_, err := New(nil, DefaultConfig(), zerolog.Nop())
	assert.Error(t, err)
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	_, err = New(nc, Config{}, zerolog.Nop())
	assert.ErrorContains(t, err, "node_ttl")
	s, err := New(nc, DefaultConfig(), zerolog.Nop())
	require.NoError(t, err)
	assert.Equal(t, 2500*time.Millisecond, s.cfg.SweepInterval)
}
