package nodeagent

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestRegisterAndDeregister(t *testing.T) {
	r := newRig(t)
	cfg := testConfig("gpu-1", synthetic.New(synthetic.Config{}))
	cfg.Zone, cfg.GPU, cfg.Cost, cfg.Clearance, cfg.MaxConcurrency = "us-west-a", true, 0.3, wire.PrivacyConfidential, 7
	cfg.Labels = map[string]string{"rack": "r1"}
	s, _ := r.agent(cfg)
	regs := r.cat.regs()
	require.Len(t, regs, 1)
	n := regs[0]
	assert.Equal(t, "gpu-1", n.NodeID)
	assert.Equal(t, "us-west", n.Region)
	assert.Equal(t, "us-west-a", n.Zone)
	assert.Equal(t, "fed.node.gpu-1.infer", n.Subject)
	assert.True(t, n.GPU)
	assert.InDelta(t, 0.3, n.Cost, 1e-9)
	assert.Equal(t, wire.PrivacyConfidential, n.Clearance)
	assert.Equal(t, 7, n.MaxConcurrency)
	assert.Equal(t, cfg.Models, n.Models)
	assert.Equal(t, "r1", n.Labels["rack"])
	assert.Equal(t, s.InstanceID(), n.InstanceID)
	assert.NotEmpty(t, n.AgentVersion)

	require.NoError(t, s.Stop())
	d := r.cat.deregs()
	require.Len(t, d, 1)
	assert.Equal(t, "gpu-1", d[0].NodeID)
	assert.Equal(t, s.InstanceID(), d[0].InstanceID)
	// Stopped: nobody serves the node's subject any more.
	_, err := r.nc.Request(subject.Default.NodeInferAt("gpu-1", "internal"), nil, 200*time.Millisecond)
	assert.ErrorIs(t, err, nats.ErrNoResponders)
}

func TestRegisterRetriesUntilACatalogAnswers(t *testing.T) {
	s0 := newRigNoCatalog(t)
	nc := s0.conn()
	s, err := New(nc, testConfig("late", synthetic.New(synthetic.Config{})), natsembed.Logger(t))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Start(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // several retries hit no responders
	select {
	case err := <-done:
		t.Fatalf("Start returned before any catalog answered: %v", err)
	default:
	}
	cat := startCatalog(t, s0.nc)
	require.NoError(t, <-done)
	assert.Len(t, cat.regs(), 1)
	require.NoError(t, s.Stop())

	// Without a catalog Start gives up when its context ends.
	lone := newRigNoCatalog(t)
	s3, err := New(lone.conn(), testConfig("never", synthetic.New(synthetic.Config{})), natsembed.Logger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err = s3.Start(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "never")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, s3.Stop(), "Stop after a failed Start is a no-op")
}

func TestStreamedAndWholeAnswers(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 7})))
	st := r.dispatch("n1", "hello mesh", stream)
	require.Equal(t, wire.StatusAccepted, st.status)
	sa := st.read(t, 2*time.Second)
	require.Len(t, sa.chunks, 7)
	assert.Equal(t, wire.StatusDone, sa.final.Header.Get(wire.HdrStatus))
	assert.Empty(t, sa.final.Data, "a stream ends in the empty sentinel")
	assert.Equal(t, "7", sa.final.Header.Get(wire.HdrTokens))
	assert.Equal(t, "0.750", sa.final.Header.Get(wire.HdrRouteScore))
	assert.NotEmpty(t, sa.final.Header.Get(wire.HdrLatencyMs))
	assert.NotEmpty(t, sa.final.Header.Get(wire.HdrTTFTMs))

	wh := r.dispatch("n1", "hello mesh")
	require.Equal(t, wire.StatusAccepted, wh.status)
	wa := wh.read(t, 2*time.Second)
	require.Empty(t, wa.chunks, "a whole answer is one final message")
	assert.Equal(t, sa.text(), string(wa.final.Data), "same input, same output, streamed or whole")
	assert.Equal(t, "7", wa.final.Header.Get(wire.HdrTokens))
	assert.Equal(t, "n1", wa.final.Header.Get(wire.HdrNode))

	// Embed with no Fed-Model picks the model serving the capability.
	em := r.dispatch("n1", "vectorise", capab(wire.CapEmbed))
	require.Equal(t, wire.StatusAccepted, em.status)
	ea := em.read(t, 2*time.Second)
	var emb struct {
		Data []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(ea.final.Data, &emb))
	require.Len(t, emb.Data, 1)
	assert.NotEmpty(t, emb.Data[0].Embedding)
}

func TestDispatchRefusals(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{})))
	cases := []struct {
		name string
		opts []dispatchOpt
		code int
		says string
	}{
		{"no request id", []dispatchOpt{without(wire.HdrRequestID)}, 400, wire.HdrRequestID},
		{"no reply-to", []dispatchOpt{without(wire.HdrReplyTo)}, 400, wire.HdrReplyTo},
		{"unknown model", []dispatchOpt{model("nope")}, 404, "nope"},
		{"capability not served", []dispatchOpt{capab(wire.CapImagegen)}, 404, "imagegen"},
		{"model lacks capability", []dispatchOpt{model("emb")}, 404, "emb"},
		{"bad capability", []dispatchOpt{capab("chat")}, 400, wire.HdrCapability},
		{"bad deadline", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrDeadline, "soon") }}, 400, wire.HdrDeadline},
		{"bad stream header", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrStream, "maybe") }}, 400, wire.HdrStream},
		{"privacy header above the subject's level", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrPrivacy, "restricted") },
			func(h nats.Header) { h.Set("X-Test-Level", "internal") }}, 403, "restricted"},
	}
	// above its clearance the node has no subject at all: nobody answers
	_, err := r.tryDispatch("n1", "x", 200*time.Millisecond, func(h nats.Header) { h.Set(wire.HdrPrivacy, "restricted") })
	assert.ErrorIs(t, err, nats.ErrNoResponders, "no endpoint for a level above the clearance")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := r.dispatch("n1", "x", tc.opts...)
			assert.Equal(t, wire.StatusError, c.status)
			e := wire.ErrorFromHeader(c.ack.Header)
			require.NotNil(t, e)
			assert.Equal(t, tc.code, e.Code, e.Description)
			assert.Contains(t, e.Description, tc.says)
			_, err := c.sub.NextMsg(50 * time.Millisecond)
			assert.ErrorIs(t, err, nats.ErrTimeout, "a refused dispatch sends nothing to the client")
		})
	}
}

func TestBackendFailureEndsInFinalError(t *testing.T) {
	r := newRig(t)
	outcomes := subscribeOutcomes(t, r.nc, "n1")
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{FailureRate: 1})))
	for _, opts := range [][]dispatchOpt{{stream}, nil} {
		c := r.dispatch("n1", "x", opts...)
		require.Equal(t, wire.StatusAccepted, c.status)
		a := c.read(t, 2*time.Second)
		assert.Equal(t, wire.CodeInternal, codeOf(a.final))
		assert.Empty(t, a.final.Data)
		o := <-outcomes
		assert.Equal(t, record.OutcomeCompleted, o.Kind)
		assert.False(t, o.OK)
		assert.Equal(t, wire.CodeInternal, o.Code)
		assert.Equal(t, c.id, o.RequestID)
	}
}

func subscribeOutcomes(t *testing.T, nc *nats.Conn, node string) chan record.Outcome {
	ch := make(chan record.Outcome, 256)
	sub, err := nc.Subscribe(subject.Default.Outcome(node), func(m *nats.Msg) {
		outs, _ := record.DecodeOutcomes(m.Subject, m.Data) // one, or a batch
		for _, o := range outs {
			ch <- o
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return ch
}

func TestOutcomeAndHeartbeat(t *testing.T) {
	r := newRig(t)
	outcomes := subscribeOutcomes(t, r.nc, "n1")
	hbs := make(chan record.Heartbeat, 256)
	sub, err := r.nc.Subscribe(subject.Default.Heartbeat("n1"), func(m *nats.Msg) {
		if h, err := record.DecodeHeartbeat(m.Subject, m.Data); err == nil {
			hbs <- h
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.MaxConcurrency = 3
	s, _ := r.agent(cfg)

	c := r.dispatch("n1", "x", stream, func(h nats.Header) { h.Set(wire.HdrTenant, "acme") })
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	natsembed.Eventually(t, 3*time.Second, func() error {
		h := <-hbs
		return natsembed.Check(h.InFlight == 1 && h.ActiveStreams == 1 && h.MaxConcurrency == 3 && h.NodeID == "n1" && h.InstanceID == s.InstanceID() && !h.Draining,
			"a heartbeat reports the request in flight: %+v", h)
	})
	close(g.release)
	a := c.read(t, 2*time.Second)
	assert.Equal(t, "ab", a.text())
	select {
	case o := <-outcomes:
		assert.Equal(t, record.OutcomeCompleted, o.Kind)
		assert.True(t, o.OK)
		assert.Equal(t, c.id, o.RequestID)
		assert.Equal(t, "n1", o.NodeID)
		assert.Equal(t, "m1", o.Model)
		assert.Equal(t, wire.CapGenerate, o.Capability)
		assert.Equal(t, "acme", o.Tenant)
		assert.Equal(t, 1, o.Attempt)
		assert.Equal(t, 2, o.Tokens)
		assert.True(t, o.Stream)
		assert.Greater(t, o.LatencyMs, 0.0)
		assert.Greater(t, o.TTFTMs, 0.0)
		assert.LessOrEqual(t, o.TTFTMs, o.LatencyMs)
	case <-time.After(2 * time.Second):
		t.Fatal("no outcome event")
	}
	natsembed.Eventually(t, 3*time.Second, func() error {
		h := <-hbs
		return natsembed.Check(h.InFlight == 0 && h.ThroughputTPS > 0, "idle again, with a throughput estimate: %+v", h)
	})
}

func TestBusyPastMaxConcurrency(t *testing.T) {
	r := newRig(t)
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.MaxConcurrency = 2
	r.agent(cfg)
	var calls []*call
	for i := 0; i < 2; i++ {
		c := r.dispatch("n1", "x", stream)
		require.Equal(t, wire.StatusAccepted, c.status)
		calls = append(calls, c)
	}
	for i := 0; i < 3; i++ {
		c := r.dispatch("n1", "x", stream)
		assert.Equal(t, wire.StatusBusy, c.status, "over max_concurrency answers busy, never queues")
		_, err := c.sub.NextMsg(20 * time.Millisecond)
		assert.ErrorIs(t, err, nats.ErrTimeout)
	}
	close(g.release)
	for _, c := range calls {
		a := c.read(t, 2*time.Second)
		assert.Equal(t, wire.StatusDone, a.final.Header.Get(wire.HdrStatus))
	}
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(r.dispatch("n1", "x").status == wire.StatusAccepted, "slots come back")
	})
}

// Many concurrent dispatches: exactly max_concurrency are accepted.
func TestBusyUnderConcurrentLoad(t *testing.T) {
	r := newRig(t)
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.MaxConcurrency = 4
	r.agent(cfg)
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := nats.NewMsg(subject.Default.NodeInferAt("n1", "internal"))
			m.Header.Set(wire.HdrRequestID, nats.NewInbox()[7:])
			m.Header.Set(wire.HdrReplyTo, nats.NewInbox())
			m.Header.Set(wire.HdrCapability, wire.CapGenerate)
			ack, err := r.nc.RequestMsg(m, 2*time.Second)
			if assert.NoError(t, err) {
				mu.Lock()
				counts[ack.Header.Get(wire.HdrStatus)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, map[string]int{wire.StatusAccepted: 4, wire.StatusBusy: 16}, counts)
	close(g.release)
}

func TestCancelStopsTheBackend(t *testing.T) {
	r := newRig(t)
	g := newGate()
	outcomes := subscribeOutcomes(t, r.nc, "n1")
	r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	t0 := time.Now()
	require.NoError(t, r.nc.Publish(subject.Default.Cancel(c.id), nil))
	select {
	case at := <-g.canceled:
		// DESIGN target is 100 ms; the bound here leaves room for a loaded CI box.
		assert.Less(t, at.Sub(t0), 500*time.Millisecond, "backend context canceled promptly")
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not reach the backend")
	}
	a := c.read(t, 2*time.Second)
	assert.Equal(t, "a", a.text())
	assert.Equal(t, wire.CodeCanceled, codeOf(a.final))
	assert.Empty(t, a.final.Data)
	o := <-outcomes
	assert.Equal(t, wire.CodeCanceled, o.Code)
	assert.False(t, o.OK)
}

func TestDeadlineEndsIn504(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "x", stream, deadlineIn(100*time.Millisecond))
	require.Equal(t, wire.StatusAccepted, c.status)
	a := c.read(t, 2*time.Second)
	assert.Equal(t, wire.CodeTimeout, codeOf(a.final))
	// A deadline already passed still gets a final answer, never silence.
	c = r.dispatch("n1", "x", deadlineIn(-time.Second))
	require.Equal(t, wire.StatusAccepted, c.status)
	a = c.read(t, 2*time.Second)
	assert.Equal(t, wire.CodeTimeout, codeOf(a.final))
}

func TestDrainFinishesStreamsInFlight(t *testing.T) {
	r := newRig(t)
	cfg := testConfig("n1", synthetic.New(synthetic.Config{Tokens: 10, TokenDelay: 20 * time.Millisecond}))
	s, _ := r.agent(cfg)
	var calls []*call
	for i := 0; i < 3; i++ {
		c := r.dispatch("n1", "x", stream)
		require.Equal(t, wire.StatusAccepted, c.status)
		calls = append(calls, c)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.Stop() }()
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(r.dispatch("n1", "x").status == wire.StatusDraining, "new work is answered draining")
	})
	for _, c := range calls {
		a := c.read(t, 3*time.Second)
		assert.Len(t, a.chunks, 10, "no stream in flight is cut")
		assert.Equal(t, wire.StatusDone, a.final.Header.Get(wire.HdrStatus))
	}
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("Stop did not return after the streams finished")
	}
	assert.Len(t, r.cat.deregs(), 1, "deregistered after the drain")
}

func TestDrainTimeoutCutsWithFinalError(t *testing.T) {
	r := newRig(t)
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.DrainTimeout = 100 * time.Millisecond
	s, _ := r.agent(cfg)
	c := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	t0 := time.Now()
	require.NoError(t, s.Stop())
	assert.Less(t, time.Since(t0), 2*time.Second)
	a := c.read(t, time.Second)
	e := wire.ErrorFromHeader(a.final.Header)
	require.NotNil(t, e)
	assert.Equal(t, wire.CodeNoCapacity, e.Code)
	assert.Contains(t, e.Description, wire.StatusDraining, "health does not count a drain cut against the node")
}

// The tests and the dev mesh "kill" a node by closing its connection, then
// call Stop: it must not hang.
func TestStopAfterConnectionClosed(t *testing.T) {
	r := newRig(t)
	g := newGate()
	s, nc := r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	nc.Close()
	t0 := time.Now()
	require.NoError(t, s.Stop())
	assert.Less(t, time.Since(t0), time.Second)
	select {
	case <-g.canceled:
	case <-time.After(time.Second):
		t.Fatal("backend call still running after Stop")
	}
}

func TestProbe(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{})))
	resp, err := r.nc.Request(subject.Default.NodeProbe("n1"), nil, time.Second)
	require.NoError(t, err)
	assert.Nil(t, wire.ErrorFromHeader(resp.Header))
	var p probeAnswer
	require.NoError(t, json.Unmarshal(resp.Data, &p))
	assert.Equal(t, probeAnswer{NodeID: "n1", Status: "ok", MaxConcurrency: DefaultMaxConcurrency, Backend: "synthetic"}, p)
}

func TestConfigValidation(t *testing.T) {
	good := testConfig("n1", synthetic.New(synthetic.Config{}))
	require.NoError(t, good.Validate())
	cases := []struct {
		name   string
		mutate func(c *Config)
		says   string
	}{
		{"node id", func(c *Config) { c.NodeID = "a.b" }, "node_id"},
		{"no region", func(c *Config) { c.Region = "" }, "region"},
		{"zone", func(c *Config) { c.Zone = "z z" }, "zone"},
		{"cost", func(c *Config) { c.Cost = 1.5 }, "cost"},
		{"concurrency", func(c *Config) { c.MaxConcurrency = -1 }, "max_concurrency"},
		{"no models", func(c *Config) { c.Models = nil }, "models"},
		{"model id", func(c *Config) { c.Models[0].ModelID = "bad id" }, "model_id"},
		{"dup model", func(c *Config) { c.Models[1].ModelID = "m1" }, "twice"},
		{"capability", func(c *Config) { c.Models[0].Capabilities = []string{"chat"} }, "capabilities"},
		{"no capability", func(c *Config) { c.Models[0].Capabilities = nil }, "capabilities"},
		{"backend", func(c *Config) { c.Backend = nil }, "backend"},
		{"clearance", func(c *Config) { c.Clearance = wire.PrivacyRestricted + 1 }, "clearance"},
		{"instance id", func(c *Config) { c.InstanceID = strings.Repeat("i", 257) }, "instance_id"},
		{"negative heartbeat", func(c *Config) { c.HeartbeatInterval = -time.Second }, "heartbeat_interval"},
		{"negative drain", func(c *Config) { c.DrainTimeout = -time.Second }, "drain_timeout"},
		{"negative register timeout", func(c *Config) { c.RegisterTimeout = -time.Second }, "register_timeout"},
		{"negative register retry", func(c *Config) { c.RegisterRetry = -time.Second }, "register_retry"},
		{"negative replay chunks", func(c *Config) { c.ReplayChunks = -1 }, "replay_chunks"},
		{"negative replay bytes", func(c *Config) { c.ReplayBytes = -1 }, "replay_bytes"},
		{"negative replay streams", func(c *Config) { c.ReplayStreams = -1 }, "replay_streams"},
		{"negative replay keep", func(c *Config) { c.ReplayKeep = -time.Second }, "replay_keep"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("n1", synthetic.New(synthetic.Config{}))
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.says)
			_, err = New(&nats.Conn{}, c, natsembed.Logger(t))
			require.Error(t, err)
			assert.True(t, strings.Contains(err.Error(), tc.says))
		})
	}
}

// A zero field means its default: a Config with only the node's identity,
// models and backend is valid, and New fills in the defaults.
func TestZeroConfigFieldsMeanDefaults(t *testing.T) {
	c := Config{NodeID: "n1", Region: "r1", Backend: synthetic.New(synthetic.Config{}),
		Models: []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}}
	require.NoError(t, c.Validate())
	s, err := New(&nats.Conn{}, c, natsembed.Logger(t))
	require.NoError(t, err)
	d := DefaultConfig()
	assert.Equal(t, d.HeartbeatInterval, s.cfg.HeartbeatInterval)
	assert.Equal(t, d.DrainTimeout, s.cfg.DrainTimeout)
	assert.Equal(t, d.MaxConcurrency, s.cfg.MaxConcurrency)
	assert.Equal(t, d.RegisterTimeout, s.cfg.RegisterTimeout)
	assert.Equal(t, d.RegisterRetry, s.cfg.RegisterRetry)
	assert.Equal(t, d.ReplayChunks, s.cfg.ReplayChunks)
	assert.Equal(t, d.ReplayBytes, s.cfg.ReplayBytes)
	assert.Equal(t, d.ReplayStreams, s.cfg.ReplayStreams)
	assert.Equal(t, d.ReplayKeep, s.cfg.ReplayKeep)
	assert.Equal(t, DefaultReplayKeep, s.replay.keep, "the buffer takes the defaults")
}

// After a reconnect the node registers again: the catalog may have expired
// it while it was cut off.
func TestRegistersAgainAfterReconnect(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	cat := startCatalog(t, nc)
	agentNC := natsembed.ConnectForTest(t, s, nats.ReconnectWait(10*time.Millisecond))
	svc, err := New(agentNC, testConfig("n1", synthetic.New(synthetic.Config{})), natsembed.Logger(t))
	require.NoError(t, err)
	natsembed.RunForTest(t, svc)
	require.Len(t, cat.regs(), 1)
	cid, err := agentNC.GetClientID()
	require.NoError(t, err)
	require.NoError(t, s.DisconnectClientByID(cid))
	natsembed.Eventually(t, 5*time.Second, func() error {
		return natsembed.Check(len(cat.regs()) == 2, "registered again after the reconnect: %d registrations", len(cat.regs()))
	})
	assert.Equal(t, svc.InstanceID(), cat.regs()[1].InstanceID)
}
