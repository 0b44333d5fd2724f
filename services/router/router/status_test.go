package router

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A node accepts a dispatch but its ack is lost (here: sent to a wrong
// subject, as in a server failover). When the ack wait runs out the router
// asks the node whether it holds the request (fed.node.<id>.status) before
// it withdraws the attempt and places the request elsewhere: held keeps it
// placed there (no second node, no cancel, no error final: the client gets
// the node's one final); not held, no responders or no answer in time go on
// as before (withdrawn, placed on the second node).
func TestIntegrationLostAckAsksTheNode(t *testing.T) {
	const (
		held     = "held"
		notHeld  = "not held"
		refused  = "refused"
		silent   = "silent"
		noStatus = "no status endpoint"
	)
	for _, tc := range []struct {
		status string
		want   string // the client's one final, by sender
	}{
		{held, "lost-ack:done"},
		{notHeld, "other:done"},
		{refused, "other:done"},
		{silent, "other:done"},
		{noStatus, "other:done"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 150; c.Policy.RetryDelayMs = 0 })
			e.addNode(tnode{id: "lost-ack", region: "eu", health: healthy(10)})
			e.addNode(tnode{id: "other", region: "eu", health: healthy(300)})
			other := e.fakeNode("other", always(wire.StatusAccepted))

			// lost-ack accepts, but its ack goes to a subject nobody reads
			var dispatch atomic.Pointer[nats.Msg]
			dsub, err := e.nc.Subscribe(subject.Default.NodeInferAt("lost-ack", "*"), func(m *nats.Msg) {
				dispatch.Store(m)
				_ = e.nc.PublishMsg(&nats.Msg{Subject: "nobody.reads.this", Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted}}})
			})
			require.NoError(t, err)
			defer dsub.Unsubscribe()
			asked := make(chan api.StatusRequest, 4)
			if tc.status != noStatus {
				ssub, err := e.nc.Subscribe(subject.Default.NodeStatus("lost-ack"), func(m *nats.Msg) {
					var sr api.StatusRequest
					_ = json.Unmarshal(m.Data, &sr)
					asked <- sr
					switch tc.status {
					case held, notHeld:
						b, _ := json.Marshal(api.StatusResponse{Held: tc.status == held})
						_ = m.Respond(b)
					case refused:
						_ = wire.RespondError(e.nc, m.Reply, wire.Errorf(wire.CodeBadRequest, "status request: no"))
					}
					if tc.status != held {
						return
					}
					// holds it: streams the answer after saying so
					d := dispatch.Load()
					id := d.Header.Get(wire.HdrRequestID)
					time.Sleep(50 * time.Millisecond)
					rep := wire.Reply{Inbox: d.Header.Get(wire.HdrReplyTo), RequestID: id, Node: "lost-ack"}
					_ = e.nc.PublishMsg(rep.Chunk([]byte("hi")))
					_ = e.nc.PublishMsg(rep.Done(nil, wire.DoneInfo{Tokens: 1, LatencyMs: 1}))
					_ = wire.PublishJSON(e.nc, subject.Default.Outcome("lost-ack"), record.Outcome{Kind: record.OutcomeCompleted,
						NodeID: "lost-ack", RequestID: id, OK: true, Time: time.Now()})
				})
				require.NoError(t, err)
				defer ssub.Unsubscribe()
			}
			cancels := make(chan *nats.Msg, 4)
			csub, err := e.nc.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) { cancels <- m })
			require.NoError(t, err)
			defer csub.Unsubscribe()
			require.NoError(t, e.nc.Flush())
			e.waitEligible("lost-ack", "other")

			inbox := nats.NewInbox()
			replies, err := e.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			m := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
			m.Reply = inbox
			id := "req-status-" + map[string]string{held: "held", notHeld: "not-held", refused: "refused", silent: "silent", noStatus: "none"}[tc.status]
			m.Header.Set(wire.HdrRequestID, id)
			m.Header.Set(wire.HdrTimeoutMs, "10000")
			require.NoError(t, e.nc.PublishMsg(m))
			// past the status wait, the retry and finalGrace: a second
			// final would be here
			got := finalsUntil(replies, func() time.Duration { return finalGrace + 500*time.Millisecond })
			assert.Equal(t, []string{tc.want}, got, "exactly one final")

			st := e.svc.Stats()
			if tc.status == noStatus {
				assert.Empty(t, asked)
			} else {
				select {
				case sr := <-asked:
					assert.Equal(t, id, sr.RequestID)
				default:
					t.Fatal("the node was never asked")
				}
				assert.Empty(t, asked, "asked once")
			}
			assert.EqualValues(t, 1, st.StatusAsked)
			if tc.status == held {
				assert.Empty(t, other.headers(), "no dispatch to a second node")
				assert.Empty(t, cancels, "no withdrawal of a node that holds the request")
				assert.EqualValues(t, 1, st.StatusHeld)
				assert.EqualValues(t, 1, st.Placed)
				assert.Zero(t, st.Unplaced)
				assert.Zero(t, st.AckCancels)
				return
			}
			assert.Len(t, other.headers(), 1, "placed on the second node")
			assert.Zero(t, st.StatusHeld)
			assert.EqualValues(t, 1, st.AckCancels)
			select {
			case c := <-cancels:
				assert.Equal(t, "lost-ack", c.Header.Get(wire.HdrNode))
			default:
				t.Fatal("no withdrawal of the attempt")
			}
		})
	}
}

// Two nodes accept a dispatch each, but neither ack nor outcome reaches the
// router, and neither answers the status question when its ack wait runs
// out (the router's connection is cut, as at a meta-leader kill): both stay
// uncertain, and the finals grace runs out with nothing heard. Before its own
// error final the router asks both once more: one that says held answered
// (or is answering) the client, so the router sends nothing and the client
// gets that node's one final; when both say no, or say nothing within the
// status wait, the router's error is the one final, as before. A node whose
// status subject has no responder then (it reconnects after its server's
// loss, having answered the client from its buffer) is not a no: it is
// asked again until it is back and says held; so is one whose answer to the
// grace's first question is lost (a reply to a router that has just
// reconnected), until it says held.
func TestIntegrationGraceAsksTheUncertainNodes(t *testing.T) {
	const (
		held    = "held"
		notHeld = "not held"
		silent  = "silent"
		// unreached: answered the client, but its status subscription is
		// gone at the grace's first question, back and saying held after
		unreached = "unreached"
		// late: answered the client, but its answer to the grace's first
		// question is lost; it says held to the next
		late = "late"
	)
	for _, tc := range []struct {
		name  string
		grace map[string]string // node → its answer at the end of the grace
		want  string            // the client's one final, by sender
	}{
		{"the second says held", map[string]string{"a": notHeld, "b": held}, "b:done"},
		{"the first says held", map[string]string{"a": held, "b": silent}, "a:done"},
		{"both say not held", map[string]string{"a": notHeld, "b": notHeld}, "router:error"},
		{"neither answers", map[string]string{"a": silent, "b": silent}, "router:error"},
		{"the first is unreached, then says held", map[string]string{"a": unreached, "b": notHeld}, "a:done"},
		{"the first's answer is lost, then it says held", map[string]string{"a": late, "b": notHeld}, "a:done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 150; c.Policy.RetryDelayMs = 0; c.Policy.MaxRetries = 1 })
			e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
			e.addNode(tnode{id: "b", region: "eu", health: healthy(10)})
			type asked struct {
				node string
				req  api.StatusRequest
			}
			questions := make(chan asked, 64)
			var dispatched atomic.Int32
			for _, node := range []string{"a", "b"} {
				// accepts; the ack goes nowhere, no outcome is sent; a node
				// that will say held answers the client
				dsub, err := e.nc.Subscribe(subject.Default.NodeInferAt(node, "*"), func(m *nats.Msg) {
					dispatched.Add(1)
					_ = e.nc.PublishMsg(&nats.Msg{Subject: "nobody.reads.this", Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted}}})
					if tc.grace[node] == held || tc.grace[node] == unreached || tc.grace[node] == late {
						rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: node}
						_ = e.nc.PublishMsg(rep.Done([]byte("hi"), wire.DoneInfo{Tokens: 1}))
					}
				})
				require.NoError(t, err)
				defer dsub.Unsubscribe()
				var n atomic.Int32
				var ssub *nats.Subscription
				answer := func(m *nats.Msg) {
					var sr api.StatusRequest
					_ = json.Unmarshal(m.Data, &sr)
					questions <- asked{node, sr}
					k := n.Add(1)
					if k == 1 || tc.grace[node] == silent || (k == 2 && tc.grace[node] == late) {
						if tc.grace[node] == unreached {
							_ = ssub.Unsubscribe() // gone, as in a reconnect
						}
						return // the question at the ack wait's end is lost
					}
					b, _ := json.Marshal(api.StatusResponse{Held: tc.grace[node] != notHeld})
					_ = m.Respond(b)
				}
				ssub, err = e.nc.Subscribe(subject.Default.NodeStatus(node), answer)
				require.NoError(t, err)
				defer func() { _ = ssub.Unsubscribe() }()
				if tc.grace[node] == unreached {
					// back once the grace's questions went out (one found
					// no responder), before the next status wait ends
					back := make(chan struct{})
					go func() {
						defer close(back)
						for e.svc.Stats().StatusAsked < 4 {
							time.Sleep(5 * time.Millisecond)
						}
						time.Sleep(20 * time.Millisecond)
						resub, err := e.nc.Subscribe(subject.Default.NodeStatus(node), answer)
						if assert.NoError(t, err) {
							assert.NoError(t, e.nc.Flush())
							t.Cleanup(func() { _ = resub.Unsubscribe() })
						}
					}()
					defer func() { <-back }()
				}
			}
			require.NoError(t, e.nc.Flush())
			e.waitEligible("a", "b")

			inbox := nats.NewInbox()
			replies, err := e.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			m := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
			m.Reply = inbox
			id := "req-grace-" + strings.ReplaceAll(tc.name, " ", "-")
			m.Header.Set(wire.HdrRequestID, id)
			m.Header.Set(wire.HdrTimeoutMs, "10000")
			start := time.Now()
			require.NoError(t, e.nc.PublishMsg(m))
			// past both ack and status waits, finalGrace and the longest
			// status wait: the router's final would be here
			until := start.Add(2*(150*time.Millisecond+ackReturn+statusWait) + finalGrace + statusWait + graceReconnectWait + time.Second)
			got := finalsUntil(replies, func() time.Duration { return time.Until(until) })
			assert.Equal(t, []string{tc.want}, got, "exactly one final")
			assert.EqualValues(t, 2, dispatched.Load(), "dispatched to both")
			per := map[string]int{}
			for len(questions) > 0 {
				q := <-questions
				assert.Equal(t, id, q.req.RequestID)
				per[q.node]++
			}
			// each heard the question at its ack wait's end and at the
			// grace's end; one that gave no answer was asked again, and
			// one that never answers until the wait ran out (an unreached
			// node's lost question is asked again but never heard)
			want := map[string]int{"a": 2, "b": 2}
			unheard := 0
			for node, a := range tc.grace {
				switch a {
				case late:
					want[node] = 3
				case unreached:
					unheard++
				}
			}
			if tc.grace["a"] == silent && tc.grace["b"] == silent {
				for node := range want {
					assert.Greater(t, per[node], 3, "%s asked again until the wait ran out", node)
					want[node] = per[node]
				}
			}
			if tc.grace["a"] == held && tc.grace["b"] == silent {
				want["b"] = per["b"] // a's held ended the wait: b asked again at most once
				assert.LessOrEqual(t, per["b"], 3)
			}
			assert.Equal(t, want, per)

			st := e.svc.Stats()
			total := unheard
			for _, n := range per {
				total += n
			}
			assert.EqualValues(t, total, st.StatusAsked, "every question counted")
			if tc.want == "router:error" {
				assert.Zero(t, st.FinalsSuppressed)
				assert.Zero(t, st.StatusHeld)
				assert.EqualValues(t, 1, st.Unplaced)
			} else {
				assert.EqualValues(t, 1, st.FinalsSuppressed)
				assert.EqualValues(t, 1, st.StatusHeld)
				assert.Zero(t, st.Unplaced)
			}
			assert.Zero(t, e.svc.acks.len(), "no status question left registered")
			t.Logf("took %v", time.Since(start))
		})
	}
}

// finalsUntil reads replies until no message comes for each wait(): every
// final as "<node>:<status>", "router" for one without Fed-Node (the
// router's own). A second final would be in the list.
func finalsUntil(replies *nats.Subscription, wait func() time.Duration) []string {
	var got []string
	for {
		r, err := replies.NextMsg(wait())
		if err != nil {
			return got
		}
		if wire.IsFinal(r) {
			from := r.Header.Get(wire.HdrNode)
			if from == "" {
				from = "router"
			}
			got = append(got, from+":"+r.Header.Get(wire.HdrStatus))
		}
	}
}
