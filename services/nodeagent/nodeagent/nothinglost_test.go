package nodeagent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func ackDeadlineIn(d time.Duration) dispatchOpt {
	return func(h nats.Header) {
		h.Set(wire.HdrAckDeadline, strconv.FormatInt(time.Now().Add(d).UnixMilli(), 10))
	}
}

func probe(t *testing.T, nc *nats.Conn, node string) probeAnswer {
	t.Helper()
	resp, err := nc.Request(subject.Default.NodeProbe(node), nil, time.Second)
	require.NoError(t, err)
	var p probeAnswer
	require.NoError(t, json.Unmarshal(resp.Data, &p))
	return p
}

// microLateDispatches is late_dispatches of the infer endpoint in
// $SRV.STATS.fed-node.
func microLateDispatches(t *testing.T, nc *nats.Conn) int64 {
	t.Helper()
	subj, err := micro.ControlSubject(micro.StatsVerb, subject.ServiceNode, "")
	require.NoError(t, err)
	resp, err := nc.Request(subj, nil, time.Second)
	require.NoError(t, err)
	var st micro.Stats
	require.NoError(t, json.Unmarshal(resp.Data, &st))
	for _, e := range st.Endpoints {
		if e.Name == "infer-internal" {
			var d nodeStats
			require.NoError(t, json.Unmarshal(e.Data, &d))
			return d.LateDispatches
		}
	}
	t.Fatalf("no infer endpoint in %s", resp.Data)
	return 0
}

// A dispatch read after its Fed-Ack-Deadline is never started: no ack, no
// final, nothing to the client; it is counted.
func TestStaleDispatchIsNeverStarted(t *testing.T) {
	r := newRig(t)
	outcomes := subscribeOutcomes(t, r.nc, "n1")
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 3})))
	cases := []struct {
		name   string
		opts   []dispatchOpt
		status string // "" = no ack at all
		code   int    // refusal code
		late   int64  // late_dispatches after the case
	}{
		{"no ack deadline: as before", nil, wire.StatusAccepted, 0, 0},
		{"ack deadline ahead", []dispatchOpt{ackDeadlineIn(5 * time.Second)}, wire.StatusAccepted, 0, 0},
		{"ack deadline passed", []dispatchOpt{ackDeadlineIn(-time.Second)}, "", 0, 1},
		{"ack deadline passed, stream", []dispatchOpt{ackDeadlineIn(-50 * time.Millisecond), stream}, "", 0, 2},
		{"passed, and an otherwise bad dispatch: still silent", []dispatchOpt{ackDeadlineIn(-time.Second), model("nope")}, "", 0, 3},
		{"not a number", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrAckDeadline, "soon") }}, wire.StatusError, 400, 3},
		{"negative", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrAckDeadline, "-5") }}, wire.StatusError, 400, 3},
		{"overflow", []dispatchOpt{func(h nats.Header) { h.Set(wire.HdrAckDeadline, "99999999999999999999") }}, wire.StatusError, 400, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := r.tryDispatch("n1", "x", 300*time.Millisecond, tc.opts...)
			switch tc.status {
			case "":
				require.ErrorIs(t, err, nats.ErrTimeout, "a stale dispatch gets no ack")
				_, err := c.sub.NextMsg(100 * time.Millisecond)
				assert.ErrorIs(t, err, nats.ErrTimeout, "and the client gets nothing")
			case wire.StatusAccepted:
				require.NoError(t, err)
				require.Equal(t, wire.StatusAccepted, c.status)
				a := c.read(t, 2*time.Second)
				assert.Equal(t, wire.StatusDone, a.final.Header.Get(wire.HdrStatus))
				o := <-outcomes
				assert.Equal(t, c.id, o.RequestID)
			default:
				require.NoError(t, err)
				e := wire.ErrorFromHeader(c.ack.Header)
				require.NotNil(t, e)
				assert.Equal(t, tc.code, e.Code)
				assert.Contains(t, e.Description, wire.HdrAckDeadline)
			}
			assert.Equal(t, tc.late, probe(t, r.nc, "n1").LateDispatches)
			assert.Equal(t, tc.late, microLateDispatches(t, r.nc))
		})
	}
	select {
	case o := <-outcomes:
		t.Fatalf("an outcome for a dispatch that never started: %+v", o)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestAckDeadlinePassed(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	cases := []struct {
		v      string
		late   bool
		refuse bool
	}{
		{"", false, false},
		{"1800000000001", false, false},
		{"1800000000000", true, false}, // the router stops waiting at that ms
		{"1799999999999", true, false},
		{"1", true, false},
		{"0", false, true},
		{"-1", false, true},
		{"1e12", false, true},
		{" 1800000000001", false, true},
		{"9223372036854775808", false, true},
	}
	for _, tc := range cases {
		h := nats.Header{}
		if tc.v != "" {
			h.Set(wire.HdrAckDeadline, tc.v)
		}
		late, werr := ackDeadlinePassed(h, now)
		assert.Equal(t, tc.late, late, "%q", tc.v)
		assert.Equal(t, tc.refuse, werr != nil, "%q", tc.v)
	}
}

// accepted and busy acks carry the node's load after the admission.
func TestAckCarriesLoad(t *testing.T) {
	r := newRig(t)
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.MaxConcurrency = 2
	r.agent(cfg)
	for i, want := range []struct{ status, inFlight string }{
		{wire.StatusAccepted, "1"}, {wire.StatusAccepted, "2"}, {wire.StatusBusy, "2"}, {wire.StatusBusy, "2"},
	} {
		c := r.dispatch("n1", "x", stream)
		require.Equal(t, want.status, c.status, "dispatch %d", i)
		assert.Equal(t, want.inFlight, c.ack.Header.Get(wire.HdrInFlight), "dispatch %d", i)
		assert.Equal(t, "2", c.ack.Header.Get(wire.HdrMaxConcurrency), "dispatch %d", i)
	}
	close(g.release)
	natsembed.Eventually(t, 2*time.Second, func() error {
		c := r.dispatch("n1", "x")
		return natsembed.Check(c.status == wire.StatusAccepted && c.ack.Header.Get(wire.HdrInFlight) == "1",
			"slots back: %s in flight %s", c.status, c.ack.Header.Get(wire.HdrInFlight))
	})
}

// A cancel naming another node in Fed-Node is ignored and not remembered;
// one naming this node, or none, cancels.
// TestTargetedCancel: a cancel naming another node changes nothing here; one
// naming this node withdraws the attempt (no final to the client, outcome
// 499 blamed on the client) and is not remembered when it comes early (a
// dispatch after it is past its ack deadline); an untargeted one cancels
// with a final 499, or is remembered.
func TestTargetedCancel(t *testing.T) {
	cases := []struct {
		name   string
		node   string // Fed-Node of the cancel; "" = none
		early  bool   // the cancel comes before the dispatch
		code   int    // final code; 0 = done; -1 = no final at all
		chunks string
	}{
		{"other node running", "n2", false, 0, "ab"},
		{"other node early", "n2", true, 0, "ab"},
		{"this node running", "n1", false, -1, "a"},
		{"this node early", "n1", true, 0, "ab"},
		{"any node running", "", false, wire.CodeCanceled, "a"},
		{"any node early", "", true, wire.CodeCanceled, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			outcomes := subscribeOutcomes(t, r.nc, "n1")
			g := newGate()
			s, _ := r.agent(testConfig("n1", g))
			id := "req-targeted-" + strconv.Itoa(i)
			// cancel publishes the cancel, then an untargeted one for a
			// sentinel id on the same subject space: once the sentinel is
			// remembered, the agent has handled the cancel before it.
			cancel := func() {
				m := nats.NewMsg(subject.Default.Cancel(id))
				if tc.node != "" {
					m.Header.Set(wire.HdrNode, tc.node)
				}
				require.NoError(t, r.nc.PublishMsg(m))
				sentinel := id + "-sentinel"
				require.NoError(t, r.nc.Publish(subject.Default.Cancel(sentinel), nil))
				natsembed.Eventually(t, 2*time.Second, func() error {
					return natsembed.Check(s.rememberedCancel(sentinel), "sentinel cancel not handled yet")
				})
			}
			if tc.early {
				cancel()
				assert.Equal(t, tc.node == "", s.rememberedCancel(id), "only an untargeted cancel is remembered")
			}
			c := r.dispatch("n1", "x", stream, func(h nats.Header) { h.Set(wire.HdrRequestID, id) })
			require.Equal(t, wire.StatusAccepted, c.status)
			if !tc.early {
				g.waitStarted(t, 1)
				cancel()
			}
			if tc.code == 0 {
				select {
				case <-g.canceled:
					t.Fatal("a cancel that does not concern this request reached the backend")
				default:
				}
				if tc.early {
					g.waitStarted(t, 1)
				}
				close(g.release)
			}
			if tc.code == -1 {
				first, err := c.sub.NextMsg(2 * time.Second)
				require.NoError(t, err)
				assert.Equal(t, tc.chunks, string(first.Data))
				select {
				case o := <-outcomes:
					assert.Equal(t, wire.CodeCanceled, o.Code)
					assert.Equal(t, record.FaultClient, o.Fault)
					assert.True(t, o.Silent, "the outcome says the client got no final from this node")
				case <-time.After(2 * time.Second):
					t.Fatal("no outcome for the withdrawn request")
				}
				m, err := c.sub.NextMsg(200 * time.Millisecond)
				assert.ErrorIs(t, err, nats.ErrTimeout, "a withdrawn attempt sends no final, got %v", m)
				return
			}
			a := c.read(t, 2*time.Second)
			assert.Equal(t, tc.code, codeOf(a.final))
			assert.Equal(t, tc.chunks, a.text())
		})
	}
}

// rememberedCancel: id is in the early-cancel memory.
func (s *Service) rememberedCancel(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.early.at[id]
	return ok
}

func TestFaultOf(t *testing.T) {
	short, def := 2*time.Second, wire.DefaultTimeout
	cases := []struct {
		name        string
		code        int
		deadlineHit bool
		budget      time.Duration
		want        string
	}{
		{"canceled", wire.CodeCanceled, false, 0, record.FaultClient},
		{"own short deadline", wire.CodeTimeout, true, short, record.FaultClient},
		{"own deadline 29 s", wire.CodeTimeout, true, def - 2*time.Second, record.FaultClient},
		{"SDK default (29 999 ms)", wire.CodeTimeout, true, def - time.Millisecond, record.FaultNode},
		{"explicit default", wire.CodeTimeout, true, def, record.FaultNode},
		{"longer than default", wire.CodeTimeout, true, time.Hour, record.FaultNode},
		{"default deadline (no Fed-Timeout-Ms)", wire.CodeTimeout, true, 0, record.FaultNode},
		{"backend stall 504, short budget", wire.CodeTimeout, false, short, record.FaultNode},
		{"backend 400", wire.CodeBadRequest, false, 0, record.FaultClient},
		{"backend 404", wire.CodeNotFound, false, 0, record.FaultClient},
		{"backend 413", wire.CodeTooLarge, false, 0, record.FaultClient},
		{"backend 422", 422, false, 0, record.FaultClient},
		{"backend 401/403 → 500", wire.CodeInternal, false, 0, record.FaultNode},
		{"backend 401 passed on", 401, false, 0, record.FaultNode},
		{"backend 403 passed on", 403, false, 0, record.FaultNode},
		{"backend 429", wire.CodeOverloaded, false, 0, record.FaultNode},
		{"backend unreachable", wire.CodeNoCapacity, false, 0, record.FaultNode},
		{"drain cut", wire.CodeNoCapacity, false, short, record.FaultNode},
		{"502", 502, false, 0, record.FaultNode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, faultOf(tc.code, tc.deadlineHit, tc.budget))
		})
	}
}

// Every failed completed outcome says whose fault it was; a success says
// nothing.
func TestOutcomeFault(t *testing.T) {
	timeoutMs := func(ms string) dispatchOpt { return func(h nats.Header) { h.Set(wire.HdrTimeoutMs, ms) } }
	cases := []struct {
		name    string
		backend string // gate, fail, ok
		opts    []dispatchOpt
		cancel  bool
		code    int
		fault   string
	}{
		{"ok", "ok", nil, false, 0, ""},
		{"backend failure", "fail", nil, false, wire.CodeInternal, record.FaultNode},
		{"canceled", "gate", nil, true, wire.CodeCanceled, record.FaultClient},
		{"client's own short deadline", "gate", []dispatchOpt{timeoutMs("100"), deadlineIn(100 * time.Millisecond)},
			false, wire.CodeTimeout, record.FaultClient},
		{"short deadline, no Fed-Timeout-Ms (router default)", "gate", []dispatchOpt{deadlineIn(100 * time.Millisecond)},
			false, wire.CodeTimeout, record.FaultNode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			outcomes := subscribeOutcomes(t, r.nc, "n1")
			g := newGate()
			cfg := testConfig("n1", g)
			switch tc.backend {
			case "fail":
				cfg.Backend = synthetic.New(synthetic.Config{FailureRate: 1})
			case "ok":
				cfg.Backend = synthetic.New(synthetic.Config{})
			}
			r.agent(cfg)
			c := r.dispatch("n1", "x", append([]dispatchOpt{stream}, tc.opts...)...)
			require.Equal(t, wire.StatusAccepted, c.status)
			if tc.cancel {
				g.waitStarted(t, 1)
				require.NoError(t, r.nc.Publish(subject.Default.Cancel(c.id), nil))
			}
			a := c.read(t, 2*time.Second)
			assert.Equal(t, tc.code, codeOf(a.final))
			select {
			case o := <-outcomes:
				assert.Equal(t, tc.code, o.Code)
				assert.Equal(t, tc.fault, o.Fault)
				_, err := record.DecodeOutcome(subject.Default.Outcome("n1"), mustJSON(t, o))
				assert.NoError(t, err, "health accepts it")
			case <-time.After(2 * time.Second):
				t.Fatal("no outcome")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// The node's catalog record vanishes (the catalog expired it after a hang,
// or someone deleted it): the agent registers again at once, same instance.
func TestRegistersAgainWhenItsRecordVanishes(t *testing.T) {
	cases := []struct {
		name string
		drop func(ctx context.Context, set *buckets.Set, key string) error
	}{
		{"deleted", func(ctx context.Context, set *buckets.Set, key string) error { return set.Catalog.Delete(ctx, key) }},
		{"purged", func(ctx context.Context, set *buckets.Set, key string) error { return set.Catalog.Purge(ctx, key) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigNoCatalog(t)
			set := natsembed.BucketsForTest(t, r.nc)
			cat := startFakeCatalog(t, r.nc, &fakeCatalog{kv: set.Catalog})
			g := newGate()
			s, _ := r.agent(testConfig("n1", g))
			require.Len(t, cat.regs(), 1)
			ctx := context.Background()
			key := buckets.NodeKey("n1")
			for n := 2; n <= 3; n++ { // and again: it keeps following
				require.NoError(t, tc.drop(ctx, set, key))
				natsembed.Eventually(t, 5*time.Second, func() error {
					_, err := set.Catalog.Get(ctx, key)
					return natsembed.Check(len(cat.regs()) >= n && err == nil,
						"registered again: %d registrations, record: %v", len(cat.regs()), err)
				})
				assert.Equal(t, s.InstanceID(), cat.regs()[n-1].InstanceID)
			}

			// Draining: a vanished record stays gone.
			c := r.dispatch("n1", "x", stream)
			require.Equal(t, wire.StatusAccepted, c.status)
			g.waitStarted(t, 1)
			stopped := make(chan error, 1)
			go func() { stopped <- s.Stop() }()
			natsembed.Eventually(t, 2*time.Second, func() error {
				return natsembed.Check(r.dispatch("n1", "x").status == wire.StatusDraining, "draining")
			})
			before := len(cat.regs())
			require.NoError(t, tc.drop(ctx, set, key))
			natsembed.Never(t, 300*time.Millisecond, func() error {
				return natsembed.Check(len(cat.regs()) == before, "a draining node registered again")
			})
			close(g.release)
			require.NoError(t, <-stopped)
			assert.Len(t, c.read(t, 2*time.Second).chunks, 2)
		})
	}
}

// A restarted agent whose id is still held by its previous instance (409)
// waits for it to fall silent instead of failing Start; Start's context still
// ends the wait.
func TestRestartedAgentWaitsOutThePreviousInstance(t *testing.T) {
	cases := []struct {
		name      string
		conflicts int
		ctx       time.Duration
		ok        bool
	}{
		{"holder expires after two refusals", 2, 10 * time.Second, true},
		{"signal while waiting", 1 << 30, time.Second, false}, // long enough for a 409 on a loaded machine
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigNoCatalog(t)
			cat := startFakeCatalog(t, r.nc, &fakeCatalog{conflicts: tc.conflicts})
			logs, log := natsembed.NewLogBuffer(t)
			s, err := New(r.conn(), testConfig("n1", synthetic.New(synthetic.Config{})), log)
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Stop() })
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			err = s.Start(ctx)
			out := logs.String()
			assert.Equal(t, 1, strings.Count(out, "waiting for the previous instance to fall silent"), "logged once: %s", out)
			assert.Contains(t, out, "node_ttl")
			if !tc.ok {
				require.Error(t, err)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Contains(t, err.Error(), "previous instance")
				assert.Empty(t, cat.regs())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, 2, cat.refusals())
			regs := cat.regs()
			require.Len(t, regs, 1)
			assert.Equal(t, s.InstanceID(), regs[0].InstanceID)
			assert.Equal(t, wire.StatusAccepted, r.dispatch("n1", "x").status, "serving")
		})
	}
}

// While it waits out its previous instance the agent sends no heartbeat
// (health must see the dead instance go silent, so routers take its
// requests over) and is off the node's subjects (a dispatch meant for the
// previous instance finds no responder and the router tries elsewhere at
// once; micro's queue group would otherwise hand this one a share of a
// live holder's dispatches); once registered it heartbeats at once and
// serves.
func TestWaitingInstanceIsSilentAndServesNothing(t *testing.T) {
	r := newRigNoCatalog(t)
	cat := startFakeCatalog(t, r.nc, &fakeCatalog{conflicts: 1 << 30})
	hbs := make(chan *nats.Msg, 64)
	sub, err := r.nc.ChanSubscribe(subject.Default.Heartbeat("n1"), hbs)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, r.nc.Flush())
	cfg := testConfig("n1", synthetic.New(synthetic.Config{}))
	cfg.HeartbeatInterval = 50 * time.Millisecond
	s, err := New(r.conn(), cfg, natsembed.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	started := make(chan error, 1)
	go func() { started <- s.Start(context.Background()) }()
	natsembed.Eventually(t, 5*time.Second, func() error {
		return natsembed.Check(cat.refusals() >= 3, "%d refusals so far", cat.refusals())
	})
	_, err = r.tryDispatch("n1", "x", 2*time.Second)
	assert.ErrorIs(t, err, nats.ErrNoResponders, "no work while a previous instance holds the id")
	_, err = r.nc.Request(subject.Default.NodeProbe("n1"), nil, 2*time.Second)
	assert.ErrorIs(t, err, nats.ErrNoResponders, "probe")
	time.Sleep(3 * cfg.HeartbeatInterval)
	assert.Empty(t, hbs, "no heartbeat while waiting out the previous instance")

	cat.mu.Lock()
	cat.conflicts = 0 // the previous instance expired
	cat.mu.Unlock()
	select {
	case err := <-started:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after the id was free")
	}
	select {
	case m := <-hbs:
		var hb record.Heartbeat
		require.NoError(t, json.Unmarshal(m.Data, &hb))
		assert.Equal(t, s.InstanceID(), hb.InstanceID)
		assert.False(t, hb.Draining)
	case <-time.After(2 * time.Second):
		t.Fatal("no heartbeat once registered")
	}
	assert.Equal(t, wire.StatusAccepted, r.dispatch("n1", "x").status, "serving once registered")
}

func TestNodeTTLHint(t *testing.T) {
	d, ok := nodeTTLHint(`node_id "n1" is registered by another live instance ("x"); it expires 10s after its last heartbeat`)
	assert.True(t, ok)
	assert.Equal(t, 10*time.Second, d)
	_, ok = nodeTTLHint(`node_id "n1": concurrent registrations, try again`)
	assert.False(t, ok)
	_, ok = nodeTTLHint(`it expires soon after`)
	assert.False(t, ok)
}

// A takeover dispatch (Fed-Takeover: the lost node) is answered with that
// header on every message, so clients accept this node in the lost one's
// place; a synthetic node registers as resumable, and a padded one does not.
func TestTakeoverEchoAndResumableRegistration(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       synthetic.Config
		resumable bool
	}{
		{"plain synthetic", synthetic.Config{Tokens: 3}, true},
		{"padded tokens", synthetic.Config{Tokens: 3, TokenBytes: 8}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.agent(testConfig("n1", synthetic.New(tc.cfg)))
			regs := r.cat.regs()
			require.NotEmpty(t, regs)
			assert.Equal(t, tc.resumable, regs[len(regs)-1].Resumable)
			for _, opts := range [][]dispatchOpt{nil, {stream}} {
				c := r.dispatch("n1", "x", append(opts, func(h nats.Header) { h.Set(wire.HdrTakeover, "lost-1") })...)
				require.Equal(t, wire.StatusAccepted, c.status)
				a := c.read(t, 2*time.Second)
				for _, m := range append(a.chunks, a.final) {
					assert.Equal(t, "lost-1", m.Header.Get(wire.HdrTakeover))
				}
			}
			plain := r.dispatch("n1", "x")
			assert.Empty(t, plain.read(t, 2*time.Second).final.Header.Get(wire.HdrTakeover), "no takeover, no header")
		})
	}
}

// A continuation (Fed-Continue-Seq, -Text) streams only what follows the
// client's chunks, from that Fed-Seq on, and can be replayed there; a node
// whose backend cannot continue refuses it with 400 and registers so.
func TestContinuation(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 6})))
	r.agent(testConfig("n2", synthetic.New(synthetic.Config{Tokens: 6, TokenBytes: 8})))
	regs := map[string]bool{}
	for _, n := range r.cat.regs() {
		regs[n.NodeID] = n.Continues
	}
	assert.Equal(t, map[string]bool{"n1": true, "n2": false}, regs, "registered continues")

	whole := r.dispatch("n1", "prompt", stream, func(h nats.Header) { h.Set(wire.HdrRequestID, "orig") }).read(t, 2*time.Second)
	require.Len(t, whole.chunks, 6)
	prefix := string(whole.chunks[0].Data) + string(whole.chunks[1].Data)
	cont := func(seq, text string) dispatchOpt {
		return func(h nats.Header) {
			h.Set(wire.HdrContinueSeq, seq)
			h.Set(wire.HdrContinueText, base64.StdEncoding.EncodeToString([]byte(text)))
		}
	}
	c := r.dispatch("n1", "prompt", stream, cont("2", prefix))
	require.Equal(t, wire.StatusAccepted, c.status)
	var got []*nats.Msg
	for {
		m, err := c.sub.NextMsg(2 * time.Second)
		require.NoError(t, err, "no final (silence)")
		require.Equal(t, strconv.Itoa(2+len(got)), m.Header.Get(wire.HdrSeq), "Fed-Seq from the continuation point")
		if wire.IsFinal(m) {
			assert.Equal(t, wire.StatusDone, m.Header.Get(wire.HdrStatus))
			assert.Equal(t, "4", m.Header.Get(wire.HdrTokens), "the tokens this node produced")
			break
		}
		got = append(got, m)
	}
	require.Len(t, got, 4)
	for i, m := range got {
		assert.Equal(t, string(whole.chunks[2+i].Data), string(m.Data))
	}
	r.replayed(c, "n1", 3, 4, append(make([]*nats.Msg, 2), got...)) // want is indexed by Fed-Seq

	for _, tc := range []struct {
		name, node string
		opts       []dispatchOpt
		want       string
	}{
		{"a backend that cannot continue", "n2", []dispatchOpt{stream, cont("2", prefix)}, "cannot continue"},
		{"not a stream", "n1", []dispatchOpt{cont("2", prefix)}, wire.HdrStream},
		{"bad text", "n1", []dispatchOpt{stream, cont("2", ""), func(h nats.Header) { h.Set(wire.HdrContinueText, "%%%") }}, wire.HdrContinueText},
		{"bad seq", "n1", []dispatchOpt{stream, cont("0", prefix)}, wire.HdrContinueSeq},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.dispatch(tc.node, "prompt", tc.opts...)
			e := wire.ErrorFromHeader(c.ack.Header)
			require.NotNil(t, e, "refused in the ack")
			assert.Equal(t, wire.CodeBadRequest, e.Code)
			assert.Contains(t, e.Description, tc.want)
		})
	}
	wrong, err := r.dispatch("n1", "prompt", stream, cont("2", "not the answer")).sub.NextMsg(2 * time.Second)
	require.NoError(t, err)
	assert.Equal(t, "2", wrong.Header.Get(wire.HdrSeq), "the final follows the client's chunks")
	e := wire.ErrorFromHeader(wrong.Header)
	require.NotNil(t, e, "text that is not the answer's beginning is refused")
	assert.Equal(t, wire.CodeBadRequest, e.Code)
}
