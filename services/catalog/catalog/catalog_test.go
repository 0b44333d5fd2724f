package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
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

func startCatalog(t *testing.T, nc *nats.Conn, log zerolog.Logger, mod func(*Config)) *Service {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeTTL = 5 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(nc, cfg, log)
	require.NoError(t, err)
	natsembed.RunForTest(t, s)
	return s
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return newEnvLogging(t, natsembed.Logger(t), mod)
}

// newEnvLogging is newEnv with the catalog logging to log.
func newEnvLogging(t *testing.T, log zerolog.Logger, mod func(*Config)) *env {
	t.Helper()
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	kv := natsembed.BucketsForTest(t, nc).Catalog
	startCatalog(t, nc, log, mod)
	return &env{t: t, nc: nc, kv: kv, sp: subject.Default}
}

// every runs fn every 50 ms on its own goroutine until the returned stop is
// called; stop waits for it.
func every(fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				fn()
			}
		}
	})
	return func() { close(done); wg.Wait() }
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

// eventuallyListed waits until list answers n nodes.
func (e *env) eventuallyListed(n int) {
	e.t.Helper()
	natsembed.Eventually(e.t, 3*time.Second, func() error {
		ids := e.listIDs()
		return natsembed.Check(len(ids) == n, "listed %v, want %d nodes", ids, n)
	})
}

// eventuallyFound waits until find answers n endpoints for capability.
func (e *env) eventuallyFound(capability string, n int) {
	e.t.Helper()
	natsembed.Eventually(e.t, 3*time.Second, func() error {
		eps := e.find(capability, "")
		return natsembed.Check(len(eps) == n, "found %d endpoints for %s, want %d", len(eps), capability, n)
	})
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
	e.eventuallyFound(wire.CapTranscribe, 1)
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

	stop := every(func() { e.heartbeat("n1", "first") })
	// Past the registration grace period, heartbeats alone keep "first" alive.
	time.Sleep(400 * time.Millisecond)
	_, code, desc := e.call(e.sp.CatalogRegister(), node("n1", "second"))
	assert.Equal(t, wire.CodeConflict, code, desc)
	assert.Contains(t, desc, "n1")
	// The second instance heartbeating too must not keep the first alive.
	stop()

	natsembed.Eventually(t, 3*time.Second, func() error {
		e.heartbeat("n1", "second")
		_, code, desc := e.call(e.sp.CatalogRegister(), node("n1", "second"))
		return natsembed.Check(code == 0, "register second: %d %s", code, desc)
	})
	entry, err := e.kv.Get(context.Background(), "nodes.n1")
	require.NoError(t, err)
	var rec record.Node
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	assert.Equal(t, "second", rec.InstanceID)
}

// A restarted agent (a new instance) takes its node id over once the old
// instance is silent for TakeoverSilence, long before the old record would
// expire at NodeTTL; while the old one heartbeats it is refused.
func TestTakeoverAfterSilenceBeforeExpiry(t *testing.T) {
	const silence = 400 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.NodeTTL = time.Hour; c.TakeoverSilence = silence })
	e.register(node("n1", "first"))
	stop := every(func() { e.heartbeat("n1", "first") })
	time.Sleep(2 * silence) // past the registration's own sign of life
	_, code, desc := e.call(e.sp.CatalogRegister(), node("n1", "second"))
	require.Equal(t, wire.CodeConflict, code, "a heartbeating instance keeps its id: %s", desc)
	assert.Contains(t, desc, silence.String())
	stop()
	stopped := time.Now()

	var took time.Duration
	natsembed.Eventually(t, 3*time.Second, func() error {
		_, code, desc := e.call(e.sp.CatalogRegister(), node("n1", "second"))
		took = time.Since(stopped)
		return natsembed.Check(code == 0, "register second: %d %s", code, desc)
	})
	assert.GreaterOrEqual(t, took, silence-50*time.Millisecond, "not before the old instance was silent for takeover_silence")
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

	e.eventuallyFound(wire.CapGenerate, 4)
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
	e.eventuallyListed(3)

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

	e.eventuallyListed(2)
	assert.Equal(t, []string{"a", "c"}, e.listIDs())
	// Without instance_id any caller may deregister.
	_, code, desc = e.call(e.sp.CatalogDeregister(), api.DeregisterRequest{NodeID: "a"})
	require.Zero(t, code, desc)
	e.eventuallyListed(1)
}

func TestGetModel(t *testing.T) {
	e := newEnv(t, nil)
	m := record.Model{ModelID: "llama", Name: "Llama 3", Version: "3.1", Capabilities: []string{wire.CapGenerate, wire.CapCode},
		Parameters: "8B", Quantization: "q4_k_m"}
	e.register(node("b", "i", m))
	e.register(node("a", "i", m))
	e.register(node("c", "i", record.Model{ModelID: "other", Capabilities: []string{wire.CapEmbed}}))

	var r api.GetResponse
	natsembed.Eventually(t, 3*time.Second, func() error {
		body, code, desc := e.call(e.sp.CatalogGet(), api.GetRequest{ModelID: "llama"})
		return natsembed.Check(code == 0 && json.Unmarshal(body, &r) == nil && len(r.Nodes) == 2, "get llama: %d %s %s", code, desc, body)
	})
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

	stop := every(func() {
		e.heartbeat("alive", "i")
		// Malformed heartbeats change nothing.
		_ = e.nc.Publish(e.sp.Heartbeat("silent"), []byte("{garbage"))
		_ = e.nc.Publish(e.sp.Heartbeat("silent"), []byte(`{"node_id":"alive"}`))
	})
	natsembed.Eventually(t, 3*time.Second, func() error {
		ids := e.listIDs()
		return natsembed.Check(len(ids) == 1 && ids[0] == "alive", "nodes %v", ids)
	})
	_, err := e.kv.Get(context.Background(), "nodes.silent")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)

	// It stays while it heartbeats, well past the TTL.
	time.Sleep(600 * time.Millisecond)
	assert.Equal(t, []string{"alive"}, e.listIDs())

	stop()
	e.eventuallyListed(0)
}

func TestTwoInstancesShareTheBucket(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc1 := natsembed.ConnectForTest(t, srv)
	nc2 := natsembed.ConnectForTest(t, srv)
	startCatalog(t, nc1, natsembed.Logger(t), nil)
	startCatalog(t, nc2, natsembed.Logger(t), nil)
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
	natsembed.Eventually(t, 3*time.Second, func() error {
		for range 6 {
			if ids := e.listIDs(); len(ids) != 11 {
				return fmt.Errorf("a replica lists %d nodes, want 11", len(ids))
			}
		}
		return nil
	})
}

func TestConfigValidation(t *testing.T) {
	log := natsembed.Logger(t)
	_, err := New(nil, DefaultConfig(), log)
	assert.Error(t, err)
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	_, err = New(nc, Config{NodeTTL: -time.Second}, log)
	assert.ErrorContains(t, err, "node_ttl")
	s, err := New(nc, DefaultConfig(), log)
	require.NoError(t, err)
	assert.Equal(t, 2500*time.Millisecond, s.cfg.SweepInterval)

	// A zero config means the defaults.
	zero, err := New(nc, Config{}, log)
	require.NoError(t, err)
	assert.Equal(t, s.cfg, zero.cfg)
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		field string // "" when valid
	}{
		{"zero", Config{}, ""},
		{"defaults", DefaultConfig(), ""},
		{"explicit sweep", Config{NodeTTL: time.Second, SweepInterval: time.Minute, Workers: 1}, ""},
		{"negative node ttl", Config{NodeTTL: -time.Second}, "node_ttl"},
		{"negative sweep interval", Config{SweepInterval: -time.Second}, "sweep_interval"},
		{"negative workers", Config{Workers: -1}, "workers"},
		{"first bad field wins", Config{NodeTTL: -1, Workers: -1}, "node_ttl"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.field == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, "catalog config: "+c.field+" must be")
		})
	}
}

func TestStartOnceStopTwiceStopAfterFailedStart(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	log := natsembed.Logger(t)

	s, err := New(nc, DefaultConfig(), log)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Start(ctx))
	assert.ErrorIs(t, s.Start(ctx), lifecycle.ErrStarted, "a second Start is refused")
	require.NoError(t, s.Stop())
	require.NoError(t, s.Stop(), "Stop is idempotent")

	failed, err := New(nc, DefaultConfig(), log)
	require.NoError(t, err)
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	require.Error(t, failed.Start(cancelled))
	require.NoError(t, failed.Stop(), "Stop after a failed Start")
	assert.ErrorIs(t, failed.Start(ctx), lifecycle.ErrStopped)
}

func TestUndecodableRecordIsSkippedAndLogged(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	e := newEnvLogging(t, log, nil)
	e.register(node("good", "i"))
	_, err := e.kv.Put(context.Background(), "nodes.bad", []byte("{not json"))
	require.NoError(t, err)
	_, err = e.kv.Put(context.Background(), "nodes.other", []byte(`{"node_id":"someone-else"}`))
	require.NoError(t, err)

	natsembed.Eventually(t, 3*time.Second, func() error {
		return natsembed.Check(strings.Contains(logs.String(), "nodes.bad"), "no log line about nodes.bad")
	})
	assert.Equal(t, []string{"good"}, e.listIDs())
}

// On the bound subjects (fed.catalog.register.<node>.<region>.<clearance>,
// fed.catalog.deregister.<node>) the subject decides: a body naming
// another node or region, or a clearance above the subject's, is refused.
func TestBoundRegisterAndDeregister(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct {
		name, subj string
		code       int
	}{
		{"as itself", e.sp.CatalogRegisterAs("b1", "eu-west-1", "confidential"), 0},
		{"a lower clearance than allowed", e.sp.CatalogRegisterAs("b1", "eu-west-1", "restricted"), 0},
		{"another node's subject", e.sp.CatalogRegisterAs("b2", "eu-west-1", "confidential"), wire.CodePrivacy},
		{"another region", e.sp.CatalogRegisterAs("b1", "us-east-1", "confidential"), wire.CodePrivacy},
		{"a higher clearance than allowed", e.sp.CatalogRegisterAs("b1", "eu-west-1", "internal"), wire.CodePrivacy},
		{"not a level", e.sp.CatalogRegisterAs("b1", "eu-west-1", "cosmic"), wire.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, code, desc := e.call(tc.subj, node("b1", "i-b1"))
			assert.Equal(t, tc.code, code, desc)
		})
	}
	_, code, _ := e.call(e.sp.CatalogDeregisterAs("someone"), api.DeregisterRequest{NodeID: "b1", InstanceID: "i-b1"})
	assert.Equal(t, wire.CodePrivacy, code, "deregistering another node on one's own subject")
	_, code, desc := e.call(e.sp.CatalogDeregisterAs("b1"), api.DeregisterRequest{NodeID: "b1", InstanceID: "i-b1"})
	assert.Zero(t, code, desc)
}
