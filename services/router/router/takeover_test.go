package router

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// stageNode plays a node agent that serves or dies on the wire: it drops a
// dispatch past its Fed-Ack-Deadline, acks accepted (with load headers),
// echoes Fed-Takeover on every message as the real agent does, streams
// chunks from Fed-Seq 0 ("tok0", "tok1", …) for a stream, then the final
// and its completed outcome. A dying node sends its chunks and then nothing
// more: no final, no outcome (a SIGKILL mid-request).
type stageNode struct {
	id     string
	chunks int
	die    bool
	mu     sync.Mutex
	hd     []nats.Header
}

func (e *env) stageNode(id string, chunks int, die bool) *stageNode {
	e.t.Helper()
	n := &stageNode{id: id, chunks: chunks, die: die}
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt(id, "*"), func(m *nats.Msg) {
		if ms, err := strconv.ParseInt(m.Header.Get(wire.HdrAckDeadline), 10, 64); err == nil && time.Now().UnixMilli() >= ms {
			return
		}
		n.mu.Lock()
		n.hd = append(n.hd, m.Header)
		n.mu.Unlock()
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted},
			wire.HdrInFlight: {"1"}, wire.HdrMaxConcurrency: {"8"}}})
		reqID := m.Header.Get(wire.HdrRequestID)
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: reqID, Node: id,
			Takeover: m.Header.Get(wire.HdrTakeover)}
		stream := m.Header.Get(wire.HdrStream) == "true"
		if stream {
			for i := range n.chunks {
				_ = e.nc.PublishMsg(rep.Chunk([]byte("tok" + strconv.Itoa(i))))
			}
		}
		if n.die {
			return
		}
		var body []byte
		if !stream {
			body = []byte("whole from " + id)
		}
		_ = e.nc.PublishMsg(rep.Done(body, wire.DoneInfo{Tokens: n.chunks, LatencyMs: 1}))
		e.publishOutcome(record.Outcome{Kind: record.OutcomeCompleted, NodeID: id, RequestID: reqID, OK: true, Time: time.Now()})
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
	return n
}

func (n *stageNode) headers() []nats.Header {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]nats.Header(nil), n.hd...)
}

// publishOutcome publishes o as its node would. Fake nodes call it from
// their subscription callbacks, so it never stops the test (FailNow is for
// the test's goroutine), and a callback that runs on as the test ends, its
// connection closed by the cleanup, is no failure.
func (e *env) publishOutcome(o record.Outcome) {
	err := wire.PublishJSON(e.nc, subject.Default.Outcome(o.NodeID), o)
	if errors.Is(err, nats.ErrConnectionClosed) {
		return
	}
	assert.NoError(e.t, err)
}

// rawRequest publishes an infer request on plain NATS, as a third-party
// client would, and returns every message its inbox receives.
func (e *env) rawRequest(h nats.Header) <-chan *nats.Msg {
	e.t.Helper()
	inbox := nats.NewInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := e.nc.ChanSubscribe(inbox, ch)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.PublishMsg(&nats.Msg{Subject: subject.Default.Infer(wire.CapGenerate), Reply: inbox, Header: h,
		Data: []byte("hello")}))
	return ch
}

// untilFinal reads ch up to and including the first final message.
func untilFinal(t *testing.T, ch <-chan *nats.Msg, within time.Duration) []*nats.Msg {
	t.Helper()
	var got []*nats.Msg
	timeout := time.After(within)
	for {
		select {
		case m := <-ch:
			got = append(got, m)
			if wire.IsFinal(m) {
				return got
			}
		case <-timeout:
			t.Fatalf("no final message within %s; got %d messages", within, len(got))
		}
	}
}

// noMore checks that nothing else reaches the inbox for a while: one final.
func noMore(t *testing.T, ch <-chan *nats.Msg) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("a message after the final: node %q seq %s status %q", m.Header.Get(wire.HdrNode),
			m.Header.Get(wire.HdrSeq), m.Header.Get(wire.HdrStatus))
	case <-time.After(300 * time.Millisecond):
	}
}

// silence writes a node's fed_health record as health does once the node
// missed its heartbeats: unhealthy, last_heartbeat heard seconds ago.
func (e *env) silence(id string, heardAgo time.Duration) {
	now := time.Now().UTC()
	e.put(e.kv.Health, buckets.NodeKey(id), &record.Health{NodeID: id, State: record.StateUnhealthy,
		Circuit: record.CircuitClosed, SuccessRate: 1, LastHeartbeat: now.Add(-heardAgo), UpdatedAt: now})
}

// watchLoss collects the dispatch_failed outcomes and targeted cancels about node.
type lossWatch struct {
	failed  chan record.Outcome
	cancels chan *nats.Msg
}

func (e *env) watchLoss(node string) *lossWatch {
	e.t.Helper()
	w := &lossWatch{failed: make(chan record.Outcome, 16), cancels: make(chan *nats.Msg, 16)}
	fsub, err := e.nc.Subscribe(subject.Default.RouterFailed(node), func(m *nats.Msg) {
		if o, err := record.DecodeOutcome(m.Subject, m.Data); err == nil && o.Kind == record.OutcomeDispatchFailed {
			w.failed <- o
		}
	})
	require.NoError(e.t, err)
	csub, err := e.nc.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) {
		if m.Header.Get(wire.HdrNode) == node {
			w.cancels <- m
		}
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = fsub.Unsubscribe(); _ = csub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
	return w
}

func streamHeader(id string, stream, noResume bool) nats.Header {
	h := nats.Header{wire.HdrRequestID: {id}, wire.HdrTimeoutMs: {"10000"}}
	if stream {
		h.Set(wire.HdrStream, "true")
	}
	if noResume {
		h.Set(wire.HdrNoResume, "true")
	}
	return h
}

func TestIntegrationLostNodeTakeover(t *testing.T) {
	type lose func(e *env, a tnode)
	silent := func(e *env, a tnode) { e.silence(a.id, 4*time.Second) }
	deleted := func(e *env, a tnode) {
		require.NoError(e.t, e.kv.Catalog.Delete(context.Background(), buckets.NodeKey(a.id)))
	}
	restarted := func(e *env, a tnode) {
		a.instance = "second-instance"
		e.put(e.kv.Catalog, buckets.NodeKey(a.id), a.catalogRecord())
	}
	cases := []struct {
		name             string
		stream, noResume bool
		aResumable       bool
		bResumable       bool
		sentBeforeLoss   int // chunks the lost node streamed before it died
		lose             lose
		takeover         bool
		lostWhy          string // the 503's reason, when not taken over
	}{
		{name: "whole answer, node silent", lose: silent, takeover: true},
		{name: "whole answer, catalog delete", lose: deleted, takeover: true},
		{name: "whole answer, node restarted", lose: restarted, takeover: true},
		{name: "whole answer, non-resumable nodes", lose: silent, takeover: true},
		{name: "resumable stream, node silent", stream: true, aResumable: true, bResumable: true, sentBeforeLoss: 2,
			lose: silent, takeover: true},
		{name: "resumable stream, nothing sent yet, catalog delete", stream: true, aResumable: true, bResumable: true,
			lose: deleted, takeover: true},
		{name: "non-resumable stream", stream: true, bResumable: true, sentBeforeLoss: 2, lose: silent,
			lostWhy: "not resumable: its stream cannot continue"},
		{name: "Fed-No-Resume stream", stream: true, noResume: true, aResumable: true, bResumable: true,
			sentBeforeLoss: 1, lose: silent, lostWhy: "Fed-No-Resume"},
		{name: "resumable stream, only a non-resumable node left", stream: true, aResumable: true, sentBeforeLoss: 1,
			lose: deleted, lostWhy: "no node could take it over"},
		{name: "non-resumable stream, catalog delete", stream: true, lose: deleted, lostWhy: "not resumable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			a := tnode{id: "a", region: "eu", health: healthy(10), resumable: tc.aResumable, instance: "first-instance"}
			e.addNode(a)
			e.addNode(tnode{id: "b", region: "eu", health: healthy(300), resumable: tc.bResumable, instance: "b-1"})
			an := e.stageNode("a", tc.sentBeforeLoss, true)
			bn := e.stageNode("b", 3, false)
			e.waitEligible("a", "b")
			loss := e.watchLoss("a")

			reqID := "req-takeover"
			ch := e.rawRequest(streamHeader(reqID, tc.stream, tc.noResume))
			var first []*nats.Msg
			for range tc.sentBeforeLoss {
				select {
				case m := <-ch:
					assert.Equal(t, "a", m.Header.Get(wire.HdrNode))
					first = append(first, m)
				case <-time.After(2 * time.Second):
					t.Fatal("the doomed node's chunks never came")
				}
			}
			natsembed.Eventually(t, 2*time.Second, func() error {
				return natsembed.Check(len(an.headers()) == 1 && e.svc.Stats().Placed == 1,
					"node a has not accepted the request yet")
			})
			tc.lose(e, a)

			msgs := untilFinal(t, ch, 5*time.Second)
			final := msgs[len(msgs)-1]
			noMore(t, ch)
			st := e.svc.Stats()
			if tc.takeover {
				require.Len(t, bn.headers(), 1, "node b got the takeover dispatch")
				hb := bn.headers()[0]
				assert.Equal(t, "a", hb.Get(wire.HdrTakeover))
				assert.Equal(t, "2", hb.Get(wire.HdrAttempt), "the attempts go on counting")
				assert.Equal(t, reqID, hb.Get(wire.HdrRequestID))
				assert.Equal(t, wire.StatusDone, final.Header.Get(wire.HdrStatus))
				want := 1
				if tc.stream {
					want = 4 // b streams from Fed-Seq 0: 3 chunks and the final
				}
				require.Len(t, msgs, want)
				for i, m := range msgs {
					assert.Equal(t, "b", m.Header.Get(wire.HdrNode))
					assert.Equal(t, "a", m.Header.Get(wire.HdrTakeover), "every message of the new node names the lost one")
					assert.Equal(t, strconv.Itoa(i), m.Header.Get(wire.HdrSeq))
				}
				if !tc.stream {
					assert.Equal(t, "whole from b", string(final.Data))
				}
				assert.EqualValues(t, 1, st.Takeovers)
				assert.Zero(t, st.LostFinals)
			} else {
				require.Len(t, msgs, 1, "one final, nothing else")
				assert.Empty(t, bn.headers(), "nobody took the request over")
				we := wire.ErrorFromHeader(final.Header)
				require.NotNil(t, we)
				assert.Equal(t, wire.CodeNoCapacity, we.Code)
				assert.Contains(t, we.Description, "node a was lost after accepting the request")
				assert.Contains(t, we.Description, tc.lostWhy)
				assert.Equal(t, "a", final.Header.Get(wire.HdrLostNode))
				assert.Empty(t, final.Header.Get(wire.HdrNode), "a router final has no Fed-Node")
				assert.Equal(t, reqID, final.Header.Get(wire.HdrRequestID))
				assert.Zero(t, st.Takeovers)
				assert.EqualValues(t, 1, st.LostFinals)
			}
			select {
			case o := <-loss.failed:
				assert.Equal(t, "node lost", o.Error)
				assert.Equal(t, wire.CodeNoCapacity, o.Code)
				assert.Equal(t, record.FaultNode, o.Fault)
				assert.Equal(t, reqID, o.RequestID)
				assert.Equal(t, 1, o.Attempt)
				assert.Equal(t, "first-instance", o.InstanceID, "names the instance that took the request, also when its successor registered")
			case <-time.After(time.Second):
				t.Fatal("no dispatch_failed outcome for the lost node")
			}
			select {
			case c := <-loss.cancels:
				assert.Equal(t, subject.Default.Cancel(reqID), c.Subject, "the lost node's attempt is withdrawn")
			case <-time.After(time.Second):
				t.Fatal("no targeted cancel for the lost node")
			}
			natsembed.Eventually(t, 2*time.Second, func() error {
				st := e.svc.Stats()
				return natsembed.Check(st.Outstanding == 0, "outstanding %d after the takeover, want 0", st.Outstanding)
			})
		})
	}
}

func TestIntegrationNoTakeoverWithoutLoss(t *testing.T) {
	cases := []struct {
		name string
		run  func(e *env, ch func() <-chan *nats.Msg)
	}{
		{"a lost node with no outstanding request", func(e *env, _ func() <-chan *nats.Msg) {
			e.silence("a", 4*time.Second)
			natsembed.Eventually(e.t, 2*time.Second, func() error {
				c := e.svc.cache
				c.mu.RLock()
				defer c.mu.RUnlock()
				en := c.entries["a"]
				return natsembed.Check(en != nil && en.gate == rejUnhealthy, "the router has not seen a's silence")
			})
			require.NoError(e.t, e.kv.Catalog.Delete(context.Background(), buckets.NodeKey("a")))
		}},
		{"a request completed, then its node is lost", func(e *env, req func() <-chan *nats.Msg) {
			msgs := untilFinal(e.t, req(), 3*time.Second)
			assert.Equal(e.t, "a", msgs[len(msgs)-1].Header.Get(wire.HdrNode))
			natsembed.Eventually(e.t, 2*time.Second, func() error {
				return natsembed.Check(e.svc.Stats().Outstanding == 0, "the completion has not ended the dispatch yet")
			})
			e.silence("a", 4*time.Second)
			require.NoError(e.t, e.kv.Catalog.Delete(context.Background(), buckets.NodeKey("a")))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.addNode(tnode{id: "a", region: "eu", health: healthy(10), resumable: true})
			e.addNode(tnode{id: "b", region: "eu", health: healthy(300), resumable: true})
			e.stageNode("a", 2, false)
			bn := e.stageNode("b", 2, false)
			e.waitEligible("a", "b")
			loss := e.watchLoss("a")
			tc.run(e, func() <-chan *nats.Msg { return e.rawRequest(streamHeader("req-done", true, false)) })
			natsembed.Never(t, lostGrace+500*time.Millisecond, func() error {
				st := e.svc.Stats()
				return natsembed.Check(st.Takeovers == 0 && st.LostFinals == 0 && len(bn.headers()) == 0 &&
					len(loss.failed) == 0 && len(loss.cancels) == 0,
					"nothing was lost, yet: stats %+v, b dispatches %d, outcomes %d, cancels %d",
					st, len(bn.headers()), len(loss.failed), len(loss.cancels))
			})
		})
	}
}

func TestIntegrationUnhealthyByFailuresIsNotLost(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", health: healthy(300)})
	an := e.stageNode("a", 0, true) // holds the request
	bn := e.stageNode("b", 0, false)
	e.waitEligible("a", "b")
	ch := e.rawRequest(streamHeader("req-held", false, false))
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(len(an.headers()) == 1 && e.svc.Stats().Placed == 1, "node a has not accepted yet")
	})

	// unhealthy for its failures: it still heartbeats, so the request it
	// holds may still come; nothing is taken over
	now := time.Now().UTC()
	e.put(e.kv.Health, buckets.NodeKey("a"), &record.Health{NodeID: "a", State: record.StateUnhealthy,
		Circuit: record.CircuitClosed, ConsecutiveFailures: 3, SuccessRate: 0.5, LastHeartbeat: now.Add(-300 * time.Millisecond), UpdatedAt: now})
	natsembed.Never(t, lostGrace+500*time.Millisecond, func() error {
		return natsembed.Check(len(bn.headers()) == 0 && e.svc.Stats().Takeovers == 0, "a failing but live node was taken over")
	})

	// then it goes silent: now it is lost
	e.silence("a", 3500*time.Millisecond)
	msgs := untilFinal(t, ch, 3*time.Second)
	assert.Equal(t, "b", msgs[len(msgs)-1].Header.Get(wire.HdrNode))
	assert.Equal(t, "a", msgs[len(msgs)-1].Header.Get(wire.HdrTakeover))
	noMore(t, ch)
}

func TestDecideResumableOnly(t *testing.T) {
	cases := []struct {
		name      string
		resumable []bool // n00, n01
		want      string // "" no node
	}{
		{"the resumable one", []bool{false, true}, "n01"},
		{"none resumable", []bool{false, false}, ""},
		{"both: the better one", []bool{true, true}, "n00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodes := equalNodes(2)
			for i := range nodes {
				nodes[i].resumable = tc.resumable[i]
			}
			c := buildCache(t, nodes...)
			r := newPlacementQuery(wire.CapGenerate, specWith(nil), "")
			r.resumableOnly = true
			d := c.decide(&r, defaultPolicy(), 0)
			if tc.want == "" {
				assert.Nil(t, d.e)
				assert.Equal(t, 2, d.rejected[rejNotResumable])
				return
			}
			require.NotNil(t, d.e)
			assert.Equal(t, tc.want, d.e.id)
			assert.True(t, d.resumable)
			r.resumableOnly = false
			assert.NotNil(t, c.decide(&r, defaultPolicy(), 0).e, "a fresh request goes to any node")
		})
	}
}

func TestOutstandingTakeLost(t *testing.T) {
	c := buildCache(t, equalNodes(2)...)
	a, b := c.lookup("n00"), c.lookup("n01")
	out := newOutstanding()
	now := time.Now()
	exp := now.Add(time.Minute)
	out.add("acked", a, exp, false, &held{attempts: 1})
	out.add("awaiting-ack", a, exp, false, &held{attempts: 1})
	out.add("acked-later", a, exp, false, &held{attempts: 1})
	out.add("other-node", b, exp, false, &held{attempts: 1})
	require.True(t, out.accept("acked", "n00", now.Add(-time.Second)))
	require.True(t, out.accept("acked-later", "n00", now.Add(time.Second)))
	require.True(t, out.accept("other-node", "n01", now.Add(-time.Second)))
	assert.False(t, out.accept("acked", "n01", now), "another node's ack changes nothing")
	assert.False(t, out.accept("gone", "n00", now))

	lost := out.takeLost("n00", now)
	require.Len(t, lost, 1, "only what the node accepted before the loss signal")
	assert.Equal(t, "acked", lost[0].requestID)
	assert.Same(t, a, lost[0].e)
	assert.EqualValues(t, 2, a.outstanding.Load(), "the taken dispatch stops counting")
	assert.Empty(t, out.takeLost("n00", now), "taken once")
	out.done("acked", "n00") // its late completion finds nothing
	assert.Equal(t, 3, out.len())
}

// A request lost twice (a, then b before b sent anything) is taken over by
// c with Fed-Takeover naming both, so a client that still keeps a accepts
// c; with no node left, the router's final names both.
func TestIntegrationLostTwice(t *testing.T) {
	for _, withC := range []bool{true, false} {
		t.Run("third node "+strconv.FormatBool(withC), func(t *testing.T) {
			e := newEnv(t, nil)
			a := tnode{id: "a", region: "eu", health: healthy(10), instance: "a-1"}
			b := tnode{id: "b", region: "eu", health: healthy(20), instance: "b-1"}
			e.addNode(a)
			e.addNode(b)
			an := e.stageNode("a", 0, true)
			bn := e.stageNode("b", 0, true)
			ids := []string{"a", "b"}
			var cn *stageNode
			if withC {
				e.addNode(tnode{id: "c", region: "eu", health: healthy(300), instance: "c-1"})
				cn = e.stageNode("c", 0, false)
				ids = append(ids, "c")
			}
			e.waitEligible(ids...)
			ch := e.rawRequest(streamHeader("req-twice", false, false))
			natsembed.Eventually(t, 2*time.Second, func() error {
				return natsembed.Check(len(an.headers()) == 1, "node a has not accepted the request yet")
			})
			e.silence("a", 4*time.Second)
			natsembed.Eventually(t, 3*time.Second, func() error {
				return natsembed.Check(len(bn.headers()) == 1, "node b has not taken the request over")
			})
			assert.Equal(t, "a", bn.headers()[0].Get(wire.HdrTakeover))
			e.silence("b", 4*time.Second)
			msgs := untilFinal(t, ch, 5*time.Second)
			noMore(t, ch)
			final := msgs[len(msgs)-1]
			if withC {
				require.Len(t, cn.headers(), 1, "node c got the second takeover")
				assert.Equal(t, "a,b", cn.headers()[0].Get(wire.HdrTakeover), "the dispatch names both lost nodes")
				assert.Equal(t, "a,b", final.Header.Get(wire.HdrTakeover))
				assert.Equal(t, "c", final.Header.Get(wire.HdrNode))
				assert.Equal(t, wire.StatusDone, final.Header.Get(wire.HdrStatus))
				return
			}
			assert.Equal(t, "a,b", final.Header.Get(wire.HdrLostNode), "the router's final names both lost nodes")
			we := wire.ErrorFromHeader(final.Header)
			require.NotNil(t, we)
			assert.Contains(t, we.Description, "node b was lost")
		})
	}
}

// A continuation (Fed-Continue-Seq) goes only to a node that can continue
// an answer from its text; a fresh request to any.
func TestDecideContinuesOnly(t *testing.T) {
	cases := []struct {
		name      string
		continues []bool // n00, n01
		want      string // "" no node
	}{
		{"the one that continues", []bool{false, true}, "n01"},
		{"none continues", []bool{false, false}, ""},
		{"both: the better one", []bool{true, true}, "n00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodes := equalNodes(2)
			for i := range nodes {
				nodes[i].continues = tc.continues[i]
			}
			c := buildCache(t, nodes...)
			r := newPlacementQuery(wire.CapGenerate, specWith(func(s *wire.Spec) { s.Stream, s.ContinueSeq = true, 3 }), "")
			require.True(t, r.continuesOnly)
			d := c.decide(&r, defaultPolicy(), 0)
			if tc.want == "" {
				assert.Nil(t, d.e)
				assert.Equal(t, 2, d.rejected[rejCannotContinue])
				assert.Equal(t, wire.CodeNoCapacity, d.code)
				return
			}
			require.NotNil(t, d.e)
			assert.Equal(t, tc.want, d.e.id)
			fresh := newPlacementQuery(wire.CapGenerate, specWith(nil), "")
			assert.NotNil(t, c.decide(&fresh, defaultPolicy(), 0).e, "a fresh request goes to any node")
		})
	}
}

// A node unhealthy from its failures that then dies gets no new health
// record (its state stays unhealthy): the router's sweep notices the
// silence itself and takes its requests over.
func TestIntegrationSilentWhileUnhealthyIsLost(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LostSilence, c.SweepInterval = time.Second, 100*time.Millisecond })
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", health: healthy(300)})
	an := e.stageNode("a", 0, true)
	bn := e.stageNode("b", 0, false)
	e.waitEligible("a", "b")
	ch := e.rawRequest(streamHeader("req-silent-unhealthy", false, false))
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(len(an.headers()) == 1, "node a has not accepted yet")
	})
	heard := time.Now().UTC()
	e.put(e.kv.Health, buckets.NodeKey("a"), &record.Health{NodeID: "a", State: record.StateUnhealthy,
		Circuit: record.CircuitClosed, ConsecutiveFailures: 3, SuccessRate: 0.5, LastHeartbeat: heard, UpdatedAt: heard})
	natsembed.Never(t, 500*time.Millisecond, func() error {
		return natsembed.Check(len(bn.headers()) == 0, "taken over while its last heartbeat is recent")
	})
	msgs := untilFinal(t, ch, 3*time.Second) // no further health write
	assert.GreaterOrEqual(t, time.Since(heard), time.Second, "not before LostSilence")
	assert.Equal(t, "b", msgs[len(msgs)-1].Header.Get(wire.HdrNode))
	assert.Equal(t, "a", msgs[len(msgs)-1].Header.Get(wire.HdrTakeover))
	noMore(t, ch)
}
