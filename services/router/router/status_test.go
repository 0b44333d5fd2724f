package router

import (
	"encoding/json"
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
			var got []string
			for {
				// past the status wait, the retry and finalGrace: a
				// second final would be here
				r, err := replies.NextMsg(finalGrace + 500*time.Millisecond)
				if err != nil {
					break
				}
				if wire.IsFinal(r) {
					from := r.Header.Get(wire.HdrNode)
					if from == "" {
						from = "router"
					}
					got = append(got, from+":"+r.Header.Get(wire.HdrStatus))
				}
			}
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
