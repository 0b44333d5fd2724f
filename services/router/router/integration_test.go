package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// env is a real embedded nats-server, the router under test, the KV buckets
// the test writes catalog/health/config into, and a client.
type env struct {
	t   *testing.T
	nc  *nats.Conn
	kv  *buckets.Set
	svc *Service
	c   *client.Client
}

func newEnv(t *testing.T, tune func(*Config)) *env {
	t.Helper()
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	kv := natsembed.BucketsForTest(t, nc)

	cfg := DefaultConfig()
	cfg.Policy.AckTimeoutMs = 300
	cfg.Policy.RetryDelayMs = 10
	cfg.SweepInterval = 50 * time.Millisecond
	if tune != nil {
		tune(&cfg)
	}
	svc, err := New(natsembed.ConnectForTest(t, srv), cfg, natsembed.Logger(t))
	require.NoError(t, err)
	natsembed.RunForTest(t, svc)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &env{t: t, nc: nc, kv: kv, svc: svc, c: c}
}

func (e *env) put(kv jetstream.KeyValue, key string, v any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(e.t, err)
	_, err = kv.Put(context.Background(), key, b)
	require.NoError(e.t, err)
}

// addNode writes a node's catalog and health records, as catalog and health would.
func (e *env) addNode(n tnode) {
	e.t.Helper()
	e.put(e.kv.Catalog, buckets.NodeKey(n.id), n.catalogRecord())
	if n.health != nil {
		h := *n.health
		h.NodeID = n.id
		e.put(e.kv.Health, buckets.NodeKey(n.id), &h)
	}
}

// catalogRecord is n's record as the catalog stores it: with its infer
// subject and, since the catalog refuses max_concurrency 0, a bound high
// enough that load scores stay at their unbounded 1 while nothing is in flight.
func (n tnode) catalogRecord() *record.Node {
	rec := n.record()
	rec.Subject = subject.Default.NodeInfer(n.id)
	if rec.MaxConcurrency == 0 {
		rec.MaxConcurrency = 1000
	}
	return rec
}

func (e *env) candidates(h nats.Header) (api.CandidatesResponse, *wire.Error) {
	e.t.Helper()
	msg := nats.NewMsg(subject.Default.RouterCandidates())
	msg.Header = h
	resp, err := e.nc.RequestMsg(msg, 2*time.Second)
	require.NoError(e.t, err)
	var out api.CandidatesResponse
	if we := wire.ErrorFromHeader(resp.Header); we != nil {
		return out, we
	}
	require.NoError(e.t, json.Unmarshal(resp.Data, &out))
	return out, nil
}

// waitEligible waits until the router's candidates list every id as eligible.
func (e *env) waitEligible(ids ...string) {
	e.t.Helper()
	natsembed.Eventually(e.t, 0, func() error {
		out, werr := e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}})
		if werr != nil {
			return fmt.Errorf("nodes %v never became eligible: candidates: %w", ids, werr)
		}
		byID := map[string]api.Candidate{}
		for _, c := range out.Candidates {
			byID[c.NodeID] = c
		}
		for _, id := range ids {
			c, listed := byID[id]
			switch {
			case !listed:
				return fmt.Errorf("node %s never became eligible: not a candidate", id)
			case !c.Eligible:
				return fmt.Errorf("node %s never became eligible: rejected by %s: %s", id, c.RejectedBy, c.Reason)
			case !e.healthLoaded(id):
				return fmt.Errorf("node %s never became eligible: its health record never arrived", id)
			}
		}
		return nil
	})
}

// healthLoaded reports whether the router holds both records of id
// (tests that write one must not judge the node before it arrives).
func (e *env) healthLoaded(id string) bool {
	c := e.svc.cache
	c.mu.RLock()
	defer c.mu.RUnlock()
	en := c.entries[id]
	return en != nil && en.hasHealth && en.node != nil
}

func (e *env) infer(r client.Request) (*client.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.Capability == "" {
		r.Capability = wire.CapGenerate
	}
	if r.Body == nil {
		r.Body = []byte("hello")
	}
	return e.c.Infer(ctx, r)
}

// fakeNode plays a node agent: it answers dispatches with the status ack
// returns and, when accepted, streams one chunk and a final message to the
// client inbox, then publishes its completion outcome.
type fakeNode struct {
	id string
	mu sync.Mutex
	hd []nats.Header
}

func (e *env) fakeNode(id string, ack func(attempt int) string) *fakeNode {
	e.t.Helper()
	f := &fakeNode{id: id}
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt(id, "*"), func(m *nats.Msg) {
		f.mu.Lock()
		f.hd = append(f.hd, m.Header)
		f.mu.Unlock()
		attempt, _ := strconv.Atoi(m.Header.Get(wire.HdrAttempt))
		st := ack(attempt)
		if st == wire.StatusDone || st == doneNoOutcome {
			// answered at once (DESIGN §4): the final, then the done ack,
			// then (unless the test says not) an at_once outcome
			rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: id}
			_ = e.nc.PublishMsg(rep.Done([]byte("hi from "+id), wire.DoneInfo{Tokens: 1, LatencyMs: 1}))
			_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusDone}}})
			if st == wire.StatusDone {
				ev, _ := json.Marshal(record.Outcome{Kind: record.OutcomeCompleted, NodeID: id,
					RequestID: m.Header.Get(wire.HdrRequestID), OK: true, AtOnce: true, Time: time.Now()})
				_ = e.nc.Publish(subject.Default.Outcome(id), ev)
			}
			return
		}
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {st}}})
		if st != wire.StatusAccepted {
			return
		}
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: id}
		_ = e.nc.PublishMsg(rep.Chunk([]byte("hi from " + id)))
		_ = e.nc.PublishMsg(rep.Done(nil, wire.DoneInfo{Tokens: 1, LatencyMs: 1}))
		ev, _ := json.Marshal(record.Outcome{Kind: record.OutcomeCompleted, NodeID: id,
			RequestID: m.Header.Get(wire.HdrRequestID), OK: true, Time: time.Now()})
		_ = e.nc.Publish(subject.Default.Outcome(id), ev)
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
	return f
}

func (f *fakeNode) headers() []nats.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]nats.Header(nil), f.hd...)
}

func always(st string) func(int) string { return func(int) string { return st } }

// doneNoOutcome makes a fakeNode answer at once and ack done, and never
// send the completion outcome.
const doneNoOutcome = "done-no-outcome"

func codeOf(t *testing.T, err error) int {
	t.Helper()
	var we *wire.Error
	require.True(t, errors.As(err, &we), "want a *wire.Error, got %v", err)
	return we.Code
}

func TestIntegrationHappyPathAndOutstanding(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", maxConc: 4, health: healthy(20)})
	e.fakeNode("a", always(wire.StatusAccepted))
	e.waitEligible("a")

	resp, err := e.infer(client.Request{Tenant: "t1"})
	require.NoError(t, err)
	assert.Equal(t, "a", resp.Node)
	assert.Equal(t, "hi from a", string(resp.Body))
	// the completion outcome ends the outstanding dispatch
	natsembed.Eventually(t, 2*time.Second, func() error {
		st := e.svc.Stats()
		return natsembed.Check(st.Outstanding == 0 && st.Placed == 1, "want 0 outstanding and 1 placed, stats %+v", st)
	})
	assert.Equal(t, 1, e.svc.Stats().Nodes)
}

func TestIntegrationRetrySuccess(t *testing.T) {
	e := newEnv(t, nil)
	// a scores higher (local, fast), so it is tried first and is busy
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10), instance: "a-1"})
	e.addNode(tnode{id: "b", region: "us", health: healthy(200)})
	a := e.fakeNode("a", always(wire.StatusBusy))
	b := e.fakeNode("b", always(wire.StatusAccepted))
	e.waitEligible("a", "b")

	failed := make(chan record.Outcome, 4)
	sub, err := e.nc.Subscribe(subject.Default.RouterFailed("a"), func(m *nats.Msg) {
		var o record.Outcome
		if json.Unmarshal(m.Data, &o) == nil {
			failed <- o
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.Flush())

	resp, err := e.infer(client.Request{Region: "eu"})
	require.NoError(t, err)
	assert.Equal(t, "b", resp.Node)
	require.Len(t, a.headers(), 1)
	assert.Equal(t, "1", a.headers()[0].Get(wire.HdrAttempt))
	require.Len(t, b.headers(), 1)
	hb := b.headers()[0]
	assert.Equal(t, "2", hb.Get(wire.HdrAttempt), "second attempt")
	assert.Equal(t, wire.CapGenerate, hb.Get(wire.HdrCapability))
	assert.Equal(t, "m1", hb.Get(wire.HdrModel))
	assert.NotEmpty(t, hb.Get(wire.HdrReplyTo))
	assert.NotEmpty(t, hb.Get(wire.HdrRouteScore))
	assert.NotEmpty(t, hb.Get(wire.HdrDeadline))
	select {
	case o := <-failed:
		assert.Equal(t, record.OutcomeDispatchFailed, o.Kind)
		assert.Equal(t, 1, o.Attempt)
		assert.Equal(t, wire.StatusBusy, o.Error)
		assert.Equal(t, resp.RequestID, o.RequestID)
		assert.Equal(t, "a-1", o.InstanceID, "the instance the catalog named")
	case <-time.After(2 * time.Second):
		t.Fatal("no dispatch_failed outcome for node a")
	}
	st := e.svc.Stats()
	assert.EqualValues(t, 0, st.Retries, "a busy node is no failure: no retry counted")
	assert.EqualValues(t, 1, st.Busy)
}

func TestIntegrationRetriesExhausted(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Policy.MaxRetries = 1; c.Policy.AckTimeoutMs = 100 })
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "c", region: "eu", health: healthy(10)})
	e.fakeNode("a", always("confused")) // an ack that is no status: a failure
	e.fakeNode("b", always(wire.StatusDraining))
	// c has no responder at all
	e.waitEligible("a", "b", "c")
	_, err := e.infer(client.Request{})
	require.Error(t, err)
	assert.Equal(t, wire.CodeNoCapacity, codeOf(t, err))
	// draining is not a failure: max_retries 1 allows a second failure, c's
	assert.Contains(t, err.Error(), "all 2 attempts failed")
	assert.Contains(t, err.Error(), "b: draining")
	assert.Contains(t, err.Error(), "c: no responders")
}

func TestIntegrationNoNode503Fast(t *testing.T) {
	e := newEnv(t, nil)
	start := time.Now()
	_, err := e.infer(client.Request{})
	require.Error(t, err)
	assert.Equal(t, wire.CodeNoCapacity, codeOf(t, err))
	assert.Less(t, time.Since(start), time.Second)

	// an invalid capability token is 404 (the SDK refuses to send one, so raw NATS)
	msg := nats.NewMsg(subject.Default.Infer("bogus"))
	resp, err := e.nc.RequestMsg(msg, 2*time.Second)
	require.NoError(t, err)
	we := wire.ErrorFromHeader(resp.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeNotFound, we.Code)
	assert.Empty(t, resp.Data, "final error has an empty payload")

	// bad headers are 400 naming the header
	msg = nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
	msg.Header.Set(wire.HdrPrivacy, "top-secret")
	resp, err = e.nc.RequestMsg(msg, 2*time.Second)
	require.NoError(t, err)
	we = wire.ErrorFromHeader(resp.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeBadRequest, we.Code)
	assert.Contains(t, we.Description, wire.HdrPrivacy)
}

func TestIntegrationPrivacy(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "pub", region: "us", clearance: wire.PrivacyInternal, health: healthy(5)})
	e.addNode(tnode{id: "conf", region: "eu", clearance: wire.PrivacyConfidential, health: healthy(300)})
	e.fakeNode("pub", always(wire.StatusAccepted))
	e.fakeNode("conf", always(wire.StatusAccepted))
	e.waitEligible("pub", "conf")

	for i := 0; i < 5; i++ {
		resp, err := e.infer(client.Request{Privacy: "confidential"})
		require.NoError(t, err)
		assert.Equal(t, "conf", resp.Node)
	}
	_, err := e.infer(client.Request{Privacy: "restricted"})
	require.Error(t, err)
	assert.Equal(t, wire.CodePrivacy, codeOf(t, err))
	_, err = e.infer(client.Request{Privacy: "confidential", Regions: []string{"us"}})
	require.Error(t, err)
	assert.Equal(t, wire.CodePrivacy, codeOf(t, err))
	_, err = e.infer(client.Request{Model: "unknown-model"})
	require.Error(t, err)
	assert.Equal(t, wire.CodeNotFound, codeOf(t, err))

	// capping the region's clearance in fed_config takes conf out too
	conf := wire.PrivacyInternal
	e.put(e.kv.Config, record.ConfigKeyRegions, record.Regions{"eu": {Privacy: &conf}})
	require.Eventually(t, func() bool {
		_, err := e.infer(client.Request{Privacy: "confidential"})
		return err != nil && codeOf(t, err) == wire.CodePrivacy
	}, 3*time.Second, 20*time.Millisecond)
}

func TestIntegrationLivePolicyChange(t *testing.T) {
	e := newEnv(t, nil)
	// fast but expensive vs slow but cheap
	e.addNode(tnode{id: "fast", region: "eu", cost: 0.9, health: healthy(10)})
	e.addNode(tnode{id: "cheap", region: "eu", cost: 0.1, health: healthy(4500)})
	e.fakeNode("fast", always(wire.StatusAccepted))
	e.fakeNode("cheap", always(wire.StatusAccepted))
	e.waitEligible("fast", "cheap")
	chosen := func() string {
		out, werr := e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}})
		require.Nil(t, werr)
		for _, c := range out.Candidates {
			if c.Chosen {
				return c.NodeID
			}
		}
		return ""
	}
	require.Equal(t, "fast", chosen())
	resp, err := e.infer(client.Request{})
	require.NoError(t, err)
	assert.Equal(t, "fast", resp.Node)

	e.put(e.kv.Config, record.ConfigKeyPolicy, map[string]any{"strategy": record.StrategyLeastLatency,
		"weights": map[string]float64{"latency": 0, "cost": 5}})
	require.Eventually(t, func() bool { return chosen() == "cheap" }, 3*time.Second, 20*time.Millisecond)
	resp, err = e.infer(client.Request{})
	require.NoError(t, err)
	assert.Equal(t, "cheap", resp.Node)

	// an invalid value is refused: the last good policy stays
	_, err = e.kv.Config.Put(context.Background(), record.ConfigKeyPolicy, []byte(`{"strategy":"fastest"}`))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // nothing to poll for: the point is that nothing changes
	assert.Equal(t, "cheap", chosen())
	assert.Equal(t, 5.0, e.svc.policy.Load().Weights.Cost)

	// deleting the key returns to the configured policy
	require.NoError(t, e.kv.Config.Delete(context.Background(), record.ConfigKeyPolicy))
	require.Eventually(t, func() bool { return chosen() == "fast" }, 3*time.Second, 20*time.Millisecond)

	// strategy change live: round robin uses both
	e.put(e.kv.Config, record.ConfigKeyPolicy, map[string]any{"strategy": record.StrategyRoundRobin})
	require.Eventually(t, func() bool { return e.svc.policy.Load().Strategy == record.StrategyRoundRobin }, 3*time.Second, 10*time.Millisecond)
	seen := map[string]int{}
	for i := 0; i < 6; i++ {
		resp, err := e.infer(client.Request{})
		require.NoError(t, err)
		seen[resp.Node]++
	}
	assert.Equal(t, map[string]int{"fast": 3, "cheap": 3}, seen)
}

func TestIntegrationTenantLimit(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.fakeNode("a", always(wire.StatusAccepted))
	e.waitEligible("a")
	e.put(e.kv.Config, record.ConfigKeyTenants, record.Tenants{"limited": {RequestsPerSecond: 0.01, Burst: 2}})
	require.Eventually(t, func() bool {
		e.svc.limits.mu.Lock()
		defer e.svc.limits.mu.Unlock()
		return e.svc.limits.cfg != nil
	}, 3*time.Second, 10*time.Millisecond)

	for i := 0; i < 2; i++ {
		_, err := e.infer(client.Request{Tenant: "limited"})
		require.NoError(t, err, "request %d within the burst", i)
	}
	_, err := e.infer(client.Request{Tenant: "limited"})
	require.Error(t, err)
	assert.Equal(t, wire.CodeOverloaded, codeOf(t, err))
	_, err = e.infer(client.Request{Tenant: "other"})
	require.NoError(t, err, "other tenants are not limited")
}

func TestIntegrationCandidatesEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "near", region: "eu", clearance: wire.PrivacyConfidential, health: healthy(50)})
	e.addNode(tnode{id: "far", region: "eu", clearance: wire.PrivacyConfidential, health: healthy(120)})
	e.addNode(tnode{id: "low", region: "us", clearance: wire.PrivacyInternal, health: healthy(5)})
	e.addNode(tnode{id: "open", region: "eu", clearance: wire.PrivacyRestricted,
		health: &record.Health{State: record.StateHealthy, Circuit: record.CircuitOpen}})
	e.waitEligible("near", "far")
	require.Eventually(t, func() bool { return e.healthLoaded("low") && e.healthLoaded("open") }, 3*time.Second, 10*time.Millisecond)

	out, werr := e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}, wire.HdrPrivacy: {"confidential"}})
	require.Nil(t, werr)
	assert.Equal(t, wire.CapGenerate, out.Capability)
	assert.Equal(t, record.StrategyExpectedTTFT, out.Strategy)
	assert.Equal(t, "ttft", out.Decisive, "50 ms beats 120 ms on expected TTFT")
	byID := map[string]api.Candidate{}
	for _, c := range out.Candidates {
		byID[c.NodeID] = c
		assert.Len(t, c.Scores, numPolicies)
	}
	require.Len(t, byID, 4)
	assert.True(t, byID["near"].Chosen)
	assert.True(t, byID["near"].Eligible)
	assert.Greater(t, byID["near"].Total, byID["far"].Total)
	assert.False(t, byID["low"].Eligible)
	assert.Equal(t, "privacy", byID["low"].RejectedBy)
	assert.Contains(t, byID["low"].Reason, "clearance internal")
	assert.Equal(t, "health", byID["open"].RejectedBy)
	assert.Equal(t, "circuit open", byID["open"].Reason)

	_, werr = e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}, wire.HdrCostTolerance: {"500"}})
	require.NotNil(t, werr)
	assert.Equal(t, wire.CodeBadRequest, werr.Code)
	_, werr = e.candidates(nats.Header{})
	require.NotNil(t, werr)
	assert.Equal(t, wire.CodeBadRequest, werr.Code)
}

func TestIntegrationStatsAndCatalogDeletes(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", health: healthy(10)})
	statsNodes := func() int {
		resp, err := e.nc.Request("$SRV.STATS."+subject.ServiceRouter, nil, time.Second)
		require.NoError(t, err)
		var st struct {
			Endpoints []struct {
				Name string          `json:"name"`
				Data json.RawMessage `json:"data"`
			} `json:"endpoints"`
		}
		require.NoError(t, json.Unmarshal(resp.Data, &st))
		require.NotEmpty(t, st.Endpoints)
		var d struct {
			Nodes int `json:"nodes"`
		}
		require.NoError(t, json.Unmarshal(st.Endpoints[0].Data, &d))
		return d.Nodes
	}
	natsembed.Eventually(t, 3*time.Second, func() error {
		n := statsNodes()
		return natsembed.Check(n == 2, "stats report %d nodes, want 2", n)
	})
	require.NoError(t, e.kv.Catalog.Delete(context.Background(), buckets.NodeKey("a")))
	require.NoError(t, e.kv.Catalog.Purge(context.Background(), buckets.NodeKey("b")))
	natsembed.Eventually(t, 3*time.Second, func() error {
		n := statsNodes()
		return natsembed.Check(n == 0, "stats report %d nodes after the deletes, want 0", n)
	})
}

func TestIntegrationStartLoadsExistingState(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	kv := natsembed.BucketsForTest(t, nc)
	ctx := context.Background()
	b, _ := json.Marshal(tnode{id: "x", region: "eu"}.catalogRecord())
	_, err := kv.Catalog.Put(ctx, buckets.NodeKey("x"), b)
	require.NoError(t, err)
	_, err = kv.Config.Put(ctx, record.ConfigKeyPolicy, []byte(`{"strategy":"power_of_two"}`))
	require.NoError(t, err)

	svc, err := New(nc, DefaultConfig(), natsembed.Logger(t))
	require.NoError(t, err)
	natsembed.RunForTest(t, svc)
	// no polling: Start returns only once the initial values are in memory
	assert.Equal(t, 1, svc.Stats().Nodes)
	assert.Equal(t, record.StrategyPowerOfTwo, svc.Stats().Strategy)
}

func TestIntegrationOverloaded429(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(c *Config) { c.MaxInFlight = 1; c.Policy.AckTimeoutMs = 2000 })
	e.addNode(tnode{id: "slow", region: "eu", health: healthy(10)})
	e.waitEligible("slow")
	started := make(chan struct{}, 1)
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("slow", "*"), func(m *nats.Msg) {
		started <- struct{}{}
		<-release // hold the ack: the router's only slot stays taken
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusBusy}}})
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	defer close(release)
	require.NoError(t, e.nc.Flush())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapGenerate})
		first <- err
	}()
	<-started
	_, err = e.infer(client.Request{})
	require.Error(t, err)
	assert.Equal(t, wire.CodeOverloaded, codeOf(t, err))
}

// recorder is a custom middleware that records what it sees and refuses
// one tenant.
type recorder struct {
	mu     sync.Mutex
	placed []Result
	errs   []int
}

func (r *recorder) BeforeRoute(_ context.Context, req *Inbound) error {
	if req.Spec.Tenant == "banned" {
		return wire.Errorf(wire.CodeUnauthorized, "tenant banned")
	}
	return nil
}

func (r *recorder) AfterDispatch(_ *Inbound, res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.placed = append(r.placed, *res)
}

func (r *recorder) OnError(_ *Inbound, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, wire.CodeOf(err))
}

func TestIntegrationMiddleware(t *testing.T) {
	rec := &recorder{}
	e := newEnv(t, func(c *Config) { c.Middleware = []Middleware{rec} })
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.fakeNode("a", always(wire.StatusAccepted))
	e.waitEligible("a")
	_, err := e.infer(client.Request{})
	require.NoError(t, err)
	_, err = e.infer(client.Request{Tenant: "banned"})
	require.Error(t, err)
	assert.Equal(t, wire.CodeUnauthorized, codeOf(t, err))
	_, err = e.infer(client.Request{Model: "nope"})
	require.Error(t, err)
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.placed) == 1 && len(rec.errs) == 2
	}, 2*time.Second, 10*time.Millisecond)
	assert.Positive(t, rec.placed[0].PredictedTTFTMs, "expected_ttft's prediction")
	assert.Equal(t, Result{Node: "a", Model: "m1", Attempts: 1, Score: rec.placed[0].Score,
		PredictedTTFTMs: rec.placed[0].PredictedTTFTMs}, rec.placed[0])
	// OnError runs after the client has its answer, so the two hooks may run in either order.
	assert.ElementsMatch(t, []int{wire.CodeUnauthorized, wire.CodeNotFound}, rec.errs)
}

// A catalog record's subject field is never where the router sends: a
// record saying "subject":"evil.sink" (someone who could write fed_catalog,
// DESIGN §2) still gets its dispatches on fed.node.<id>.infer.<level>,
// derived from the id and the request's privacy.
func TestIntegrationDispatchSubjectFromIDNotRecord(t *testing.T) {
	e := newEnv(t, nil)
	n := tnode{id: "a", region: "eu", clearance: wire.PrivacyRestricted, maxConc: 4, health: healthy(20)}
	rec := n.catalogRecord()
	rec.Subject = "evil.sink"
	e.put(e.kv.Catalog, buckets.NodeKey(n.id), rec)
	h := *n.health
	h.NodeID = n.id
	e.put(e.kv.Health, buckets.NodeKey(n.id), &h)
	sink, err := e.nc.SubscribeSync("evil.>")
	require.NoError(t, err)
	levels := []string{"public", "internal", "confidential", "restricted"}
	at := map[string]*nats.Subscription{}
	for _, p := range levels {
		at[p], err = e.nc.SubscribeSync(subject.Default.NodeInferAt("a", p))
		require.NoError(t, err)
	}
	node := e.fakeNode("a", always(wire.StatusAccepted))
	e.waitEligible("a")

	for _, p := range levels {
		resp, err := e.infer(client.Request{Privacy: p})
		require.NoError(t, err, p)
		assert.Equal(t, "a", resp.Node, p)
	}
	require.Len(t, node.headers(), 4, "every dispatch reached the node's own subjects")
	require.NoError(t, e.nc.Flush())
	for _, p := range levels {
		n, _, err := at[p].Pending()
		require.NoError(t, err)
		assert.Equal(t, 1, n, "one dispatch on %s", subject.Default.NodeInferAt("a", p))
	}
	leaked, _, err := sink.Pending()
	require.NoError(t, err)
	assert.Zero(t, leaked, "the router published on the record's subject")
}
