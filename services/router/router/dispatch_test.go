package router

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// TestMsgSizeMatchesNATS checks msgSize against nats.go itself: a message
// of exactly max_payload by msgSize is published, one byte more is refused.
func TestMsgSizeMatchesNATS(t *testing.T) {
	srv := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, srv)
	limit := int(nc.MaxPayload())
	cases := []struct {
		name string
		h    nats.Header
	}{
		{"no headers", nil},
		{"one header", nats.Header{wire.HdrRequestID: {"abc"}}},
		{"values trimmed", nats.Header{wire.HdrTenant: {"  spaced  "}, wire.HdrStream: {"true"}}},
		{"several values", nats.Header{"X-Multi": {"a", "bb", "ccc"}, wire.HdrModel: {"m1"}}},
		{"a dispatch", nats.Header{wire.HdrRequestID: {"kA6vI9swValaA8KJrcN9yo"}, wire.HdrReplyTo: {"_INBOX.abc.def"},
			wire.HdrAttempt: {"1"}, wire.HdrRouteScore: {"0.977"}, wire.HdrDeadline: {"1798000000000"},
			wire.HdrAckDeadline: {"1798000000000"}, wire.HdrCapability: {"generate"}, wire.HdrModel: {"m1"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, limit-msgSize(tc.h, nil))
			require.Equal(t, limit, msgSize(tc.h, data))
			require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: "size.test", Header: tc.h, Data: data}), "exactly max_payload fits")
			data = append(data, 'x')
			err := nc.PublishMsg(&nats.Msg{Subject: "size.test", Header: tc.h, Data: data})
			assert.ErrorIs(t, err, nats.ErrMaxPayload, "one byte more does not")
		})
	}
}

// rawInfer sends a request on plain NATS (as a third-party client would)
// and returns the router's or node's first answer.
func (e *env) rawInfer(h nats.Header, body []byte) *nats.Msg {
	e.t.Helper()
	m := &nats.Msg{Subject: subject.Default.Infer(wire.CapGenerate), Header: h, Data: body}
	resp, err := e.nc.RequestMsg(m, 5*time.Second)
	require.NoError(e.t, err)
	return resp
}

func TestIntegrationDispatchTooLarge413(t *testing.T) {
	e := newEnv(t, nil)
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	a := e.fakeNode("a", always(wire.StatusAccepted))
	e.waitEligible("a")
	outcomes := make(chan record.Outcome, 8)
	sub, err := e.nc.Subscribe(subject.Default.RouterFailedAll(), func(m *nats.Msg) {
		var o record.Outcome
		if json.Unmarshal(m.Data, &o) == nil && o.Kind == record.OutcomeDispatchFailed {
			outcomes <- o
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	unplaced := make(chan record.Unplaced, 8)
	usub, err := e.nc.Subscribe(subject.Default.Unplaced(), func(m *nats.Msg) {
		var u record.Unplaced
		if json.Unmarshal(m.Data, &u) == nil {
			unplaced <- u
		}
	})
	require.NoError(t, err)
	defer usub.Unsubscribe()
	require.NoError(t, e.nc.Flush())

	// fits the client's publish (10 bytes under max_payload), not the dispatch
	limit := int(e.nc.MaxPayload())
	h := nats.Header{wire.HdrTimeoutMs: {"5000"}}
	body := bytes.Repeat([]byte("a"), limit-msgSize(h, nil)-10)
	resp := e.rawInfer(h, body)
	we := wire.ErrorFromHeader(resp.Header)
	require.NotNil(t, we, "a final error")
	assert.Equal(t, wire.CodeTooLarge, we.Code)
	assert.Contains(t, we.Description, "does not fit the dispatch limit of")
	assert.Contains(t, we.Description, "max_payload "+strconv.Itoa(limit))
	assert.Empty(t, a.headers(), "no dispatch was sent")
	select {
	case u := <-unplaced:
		assert.Equal(t, wire.CodeTooLarge, u.Code)
		assert.Zero(t, u.Attempts)
	case <-time.After(2 * time.Second):
		t.Fatal("no unplaced event for the 413")
	}
	assert.EqualValues(t, 1, e.svc.Stats().TooLarge)

	// the limit it names is exact: a request of that size is dispatched
	match := regexp.MustCompile(`dispatch limit of (\d+) bytes`).FindStringSubmatch(we.Description)
	require.Len(t, match, 2)
	fit, _ := strconv.Atoi(match[1])
	body = bytes.Repeat([]byte("a"), fit-msgSize(h, nil))
	resp = e.rawInfer(h, body)
	assert.Nil(t, wire.ErrorFromHeader(resp.Header), "a request of exactly the limit is served")
	assert.Equal(t, "a", resp.Header.Get(wire.HdrNode))
	select {
	case o := <-outcomes:
		t.Fatalf("a too large request is not the node's failure, got %+v", o)
	default:
	}
}

func TestIntegrationAckTimeoutCancelsThatAttempt(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 200 })
	e.addNode(tnode{id: "mute", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "ok", region: "eu", health: healthy(300)})
	dispatches := make(chan *nats.Msg, 4)
	msub, err := e.nc.Subscribe(subject.Default.NodeInferAt("mute", "*"), func(m *nats.Msg) { dispatches <- m }) // never acks
	require.NoError(t, err)
	defer msub.Unsubscribe()
	okNode := e.fakeNode("ok", always(wire.StatusAccepted))
	cancels := make(chan *nats.Msg, 4)
	csub, err := e.nc.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) { cancels <- m })
	require.NoError(t, err)
	defer csub.Unsubscribe()
	failed := make(chan record.Outcome, 4)
	fsub, err := e.nc.Subscribe(subject.Default.RouterFailed("mute"), func(m *nats.Msg) {
		o, err := record.DecodeOutcome(m.Subject, m.Data)
		if err == nil {
			failed <- o
		}
	})
	require.NoError(t, err)
	defer fsub.Unsubscribe()
	require.NoError(t, e.nc.Flush())
	e.waitEligible("mute", "ok")

	sent := time.Now()
	resp, err := e.infer(client.Request{RequestID: "req-ack-1"})
	require.NoError(t, err)
	assert.Equal(t, "ok", resp.Node)

	var d *nats.Msg
	select {
	case d = <-dispatches:
	case <-time.After(time.Second):
		t.Fatal("mute never got the dispatch")
	}
	ackBy, err := strconv.ParseInt(d.Header.Get(wire.HdrAckDeadline), 10, 64)
	require.NoError(t, err, "the dispatch carries Fed-Ack-Deadline")
	assert.GreaterOrEqual(t, ackBy, sent.UnixMilli()+200-1)
	assert.LessOrEqual(t, ackBy, time.Now().UnixMilli())
	deadline, _ := strconv.ParseInt(d.Header.Get(wire.HdrDeadline), 10, 64)
	assert.Less(t, ackBy, deadline, "the ack deadline is before the request's")
	require.Len(t, okNode.headers(), 1)
	assert.NotEmpty(t, okNode.headers()[0].Get(wire.HdrAckDeadline))

	select {
	case c := <-cancels:
		assert.Equal(t, subject.Default.Cancel("req-ack-1"), c.Subject)
		assert.Equal(t, "mute", c.Header.Get(wire.HdrNode), "the cancel names the node that never acked")
		key := d.Header.Get(wire.HdrCancelKey)
		require.NotEmpty(t, key, "the SDK's cancel key is in the dispatch")
		assert.Equal(t, wire.WithdrawKey(key, "mute"), c.Header.Get(wire.HdrCancelKey),
			"the withdrawal carries the key's digest for the node, not the key every node would hear")
	case <-time.After(time.Second):
		t.Fatal("no targeted cancel after the ack timeout")
	}
	select {
	case c := <-cancels:
		t.Fatalf("one cancel only, got another for %s node %q", c.Subject, c.Header.Get(wire.HdrNode))
	default:
	}
	select {
	case o := <-failed:
		assert.Equal(t, "ack timeout", o.Error)
		assert.Equal(t, record.FaultNode, o.Fault)
		assert.Equal(t, wire.CodeNoCapacity, o.Code)
	case <-time.After(time.Second):
		t.Fatal("no dispatch_failed outcome for the mute node")
	}
	assert.EqualValues(t, 1, e.svc.Stats().AckCancels)
}

func TestSubjectToken(t *testing.T) {
	cases := map[string]bool{"abc": true, "kA6vI9swValaA8KJrcN9yo": true, "a-b_c": true,
		"": false, "a.b": false, "a b": false, "*": false, ">": false, "a\tb": false}
	for id, want := range cases {
		assert.Equal(t, want, subjectToken(id), "%q", id)
	}
}

func TestParseAckLoad(t *testing.T) {
	cases := []struct {
		name      string
		in, max   string
		wantIn    int
		wantMax   int
		absentMax bool
	}{
		{"both", "3", "8", 3, 8, false},
		{"absent", "", "", -1, -1, false},
		{"zero in flight", "0", "1", 0, 1, false},
		{"zero max is no limit: ignored", "1", "0", 1, -1, false},
		{"negative", "-1", "-4", -1, -1, false},
		{"not a number", "x", "1e3", -1, -1, false},
		{"overflow", "9223372036854775808", "99999999999", -1, -1, false},
		{"over 2^30", strconv.Itoa(maxLoad + 1), strconv.Itoa(maxLoad), -1, maxLoad, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := nats.Header{}
			if tc.in != "" {
				h.Set(wire.HdrInFlight, tc.in)
			}
			if tc.max != "" {
				h.Set(wire.HdrMaxConcurrency, tc.max)
			}
			l := parseAckLoad(h)
			assert.Equal(t, tc.wantIn, l.inFlight)
			assert.Equal(t, tc.wantMax, l.maxConc)
		})
	}
}

func FuzzParseAckLoad(f *testing.F) {
	f.Add("3", "8")
	f.Add("-1", "0")
	f.Add("9223372036854775807", "1e308")
	f.Fuzz(func(t *testing.T, in, maxConc string) {
		l := parseAckLoad(nats.Header{wire.HdrInFlight: {in}, wire.HdrMaxConcurrency: {maxConc}})
		if l.inFlight != -1 && (l.inFlight < 0 || l.inFlight > maxLoad) {
			t.Fatalf("in flight %d out of range from %q", l.inFlight, in)
		}
		if l.maxConc != -1 && (l.maxConc < 1 || l.maxConc > maxLoad) {
			t.Fatalf("max concurrency %d out of range from %q", l.maxConc, maxConc)
		}
		if l.inFlight >= 0 {
			if n, err := strconv.Atoi(in); err != nil || n != l.inFlight {
				t.Fatalf("in flight %d does not come from %q", l.inFlight, in)
			}
		}
		// whatever it learned, the node entry stays routable arithmetic
		e := newEntry("n", 0)
		e.conc = 4
		if l.inFlight >= 0 {
			e.learnLoad(l.inFlight)
		}
		if got := e.inFlight(); got < 0 || got > maxLoad {
			t.Fatalf("entry in flight %d", got)
		}
	})
}

func TestQueueIsFairAndKeepsTurns(t *testing.T) {
	q := newWaitQueue(10)
	now := time.Now()
	mk := func(tenant, capability string) *waiter {
		require.True(t, q.enter())
		w := newWaiter(tenant, capability, "", now)
		q.wait(w, false)
		return w
	}
	a1, a2, a3 := mk("a", "generate"), mk("a", "generate"), mk("a", "generate")
	b1 := mk("b", "generate")
	c1 := mk("c", "embed")
	woken := func() *waiter {
		for _, w := range []*waiter{a1, a2, a3, b1, c1} {
			select {
			case <-w.wake:
				return w
			default:
			}
		}
		return nil
	}
	name := map[*waiter]string{a1: "a1", a2: "a2", a3: "a3", b1: "b1", c1: "c1", nil: "none"}
	var got []string
	for range 3 {
		require.Equal(t, 1, q.wakeUp(1, nil))
		got = append(got, name[woken()])
	}
	assert.Equal(t, []string{"a1", "b1", "c1"}, got, "round robin over tenants")

	// a1 found no room: back at the head of a's line, it keeps its turn
	q.wait(a1, true)
	require.Equal(t, 1, q.wakeUp(1, nil))
	assert.Equal(t, "a1", name[woken()])

	// a match skips waiters the freed node cannot serve
	q.wait(c1, true)
	require.Equal(t, 1, q.wakeUp(1, func(w *waiter) bool { return w.capability == "embed" }))
	assert.Equal(t, "c1", name[woken()])
	assert.Zero(t, q.wakeUp(1, func(w *waiter) bool { return w.capability == "embed" }), "no embed waiter left")

	// a woken waiter that leaves without using its wake hands it on
	require.Equal(t, 1, q.wakeUp(1, nil))
	w := woken()
	require.NotNil(t, w)
	w.wake <- struct{}{} // as if the wake had not been read yet
	assert.True(t, q.leave(w))
	assert.False(t, q.leave(a3), "a waiting waiter just leaves")
	assert.Equal(t, 3, q.length())

	// bounded
	for q.enter() {
	}
	assert.Equal(t, 10, q.length())
}

// A node whose ack is lost may still take the request and answer the client
// itself. When the router then gives up, it sends no final of its own if the
// node's completion outcome says it answered; when the outcome is silent (the
// attempt was withdrawn), the router's error is the client's one final, sent
// at once; a node that reports nothing is waited for up to finalGrace. An
// outcome published for the node by another one is not believed.
func TestIntegrationNoSecondFinalAfterALostAck(t *testing.T) {
	// a node that reports nothing has no status responder here either: the
	// router asks it again until the grace's reconnect wait ends
	unreached := finalGrace + statusWait + graceReconnectWait + 500*time.Millisecond
	for _, tc := range []struct {
		name    string
		answer  bool   // the node answers the client
		outcome string // the node the outcome names ("" none), published on lost-ack's subject
		silent  bool   // the outcome says the client got nothing
		// batch: the outcome is an element of a batch (a JSON array) whose
		// first element speaks for another node, saying silent
		batch bool
		read  time.Duration
		want  []string // the finals the client gets, by sender
	}{
		// read bounds the wait for the next reply: under finalGrace unless
		// the router must wait it out
		{"the node answered", true, "lost-ack", false, false, time.Second, []string{"lost-ack:done"}},
		{"the node was withdrawn", false, "lost-ack", true, false, time.Second, []string{"router:error"}},
		{"the node said nothing", false, "", false, false, unreached, []string{"router:error"}},
		{"another node spoke for it", false, "someone-else", true, false, unreached, []string{"router:error"}},
		{"the node answered, in a batch", true, "lost-ack", false, true, time.Second, []string{"lost-ack:done"}},
		{"the node was withdrawn, in a batch", false, "lost-ack", true, true, time.Second, []string{"router:error"}},
		{"only another node spoke for it, in a batch", false, "", false, true, unreached, []string{"router:error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 150; c.Policy.MaxRetries = 0 })
			e.addNode(tnode{id: "lost-ack", region: "eu", health: healthy(10)})
			// Takes the dispatch without acking, answers the client and
			// reports its outcome, as a node whose ack got lost would.
			sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("lost-ack", "*"), func(m *nats.Msg) {
				id := m.Header.Get(wire.HdrRequestID)
				time.Sleep(200 * time.Millisecond) // past the ack timeout
				if tc.answer {
					rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: id, Node: "lost-ack"}
					_ = e.nc.PublishMsg(rep.Done([]byte("hi"), wire.DoneInfo{Tokens: 1}))
				}
				var els []record.Outcome
				if tc.batch {
					els = append(els, record.Outcome{Kind: record.OutcomeCompleted, NodeID: "someone-else", RequestID: id, Silent: true, Time: time.Now()})
				}
				if tc.outcome != "" {
					els = append(els, record.Outcome{Kind: record.OutcomeCompleted,
						NodeID: tc.outcome, RequestID: id, OK: tc.answer, Silent: tc.silent, Time: time.Now()})
				}
				switch {
				case tc.batch:
					_ = wire.PublishJSON(e.nc, subject.Default.Outcome("lost-ack"), els)
				case len(els) == 1:
					_ = wire.PublishJSON(e.nc, subject.Default.Outcome("lost-ack"), els[0])
				}
			})
			require.NoError(t, err)
			defer sub.Unsubscribe()
			e.waitEligible("lost-ack")

			inbox := nats.NewInbox()
			replies, err := e.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			m := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
			m.Reply = inbox
			m.Header.Set(wire.HdrRequestID, "req-lost-ack-"+strings.ReplaceAll(tc.name, " ", "-"))
			m.Header.Set(wire.HdrTimeoutMs, "10000")
			require.NoError(t, e.nc.PublishMsg(m))
			got := finalsUntil(replies, func() time.Duration { return tc.read })
			assert.Equal(t, tc.want, got, "exactly one final")
			if tc.answer {
				assert.Equal(t, int64(1), e.svc.Stats().FinalsSuppressed)
			}
		})
	}
}

// A node that answered at once acks done after its final (DESIGN §4): the
// router places the request and ends its outstanding dispatch on that ack
// alone, with no retry and no wait for the completion outcome; the client
// gets the node's one final. A router says it reads such acks on every
// dispatch (Fed-Ack-Done).
func TestIntegrationDoneAck(t *testing.T) {
	cases := []struct {
		name string
		ack  string
	}{
		{"done ack and at_once outcome", wire.StatusDone},
		{"done ack, outcome never sent", doneNoOutcome},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.addNode(tnode{id: "a", region: "eu", maxConc: 1, health: healthy(20)})
			f := e.fakeNode("a", always(c.ack))
			e.waitEligible("a")
			for i := 0; i < 3; i++ { // max_concurrency 1: each needs the slot the one before freed (a done ack or a queue wake)
				resp, err := e.infer(client.Request{})
				require.NoError(t, err)
				assert.Equal(t, "hi from a", string(resp.Body))
			}
			// the client has the final before the router reads the ack after it
			natsembed.Eventually(t, 2*time.Second, func() error {
				st := e.svc.Stats()
				return natsembed.Check(st.DoneAcks == 3 && st.Placed == 3 && st.Outstanding == 0,
					"want 3 done acks, 3 placed, 0 outstanding (the done ack ends the dispatch): %+v", st)
			})
			st := e.svc.Stats()
			assert.Zero(t, st.Retries)
			assert.Zero(t, st.Unplaced)
			en := e.svc.cache.lookup("a")
			require.NotNil(t, en)
			assert.Zero(t, en.inFlight(), "no slot counted for answered requests")
			hs := f.headers()
			require.Len(t, hs, 3)
			for _, h := range hs {
				assert.Equal(t, "true", h.Get(wire.HdrAckDone))
			}
			assert.Zero(t, e.c.LateMessages(), "one final per request")
		})
	}
}
