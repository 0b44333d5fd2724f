package client_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// step is one message a hand-written responder sends to the client's inbox,
// in order: from "router" (no Fed-Node) or a node id.
type step struct {
	from string
	kind string // chunk, done, fail, skip (a node's Fed-Seq advances, nothing sent), lose (sent, so the node can replay it, but lost on the way), garbage (to a reply token nobody issued), wait-cancel
	data string
	code int
	// takeover: a node's messages carry Fed-Takeover: takeover (set on its
	// first step, echoed on all). lost: a router's fail carries
	// Fed-Lost-Node: lost.
	takeover, lost string
}

func chunk(from, data string) step    { return step{from: from, kind: "chunk", data: data} }
func done(from, data string) step     { return step{from: from, kind: "done", data: data} }
func fail(from string, code int) step { return step{from: from, kind: "fail", code: code} }

// tchunk, tdone and tfail are from a node that took over from lost.
func tchunk(from, lost, data string) step { s := chunk(from, data); s.takeover = lost; return s }
func tdone(from, lost, data string) step  { s := done(from, data); s.takeover = lost; return s }
func tfail(from, lost string, code int) step {
	s := fail(from, code)
	s.takeover = lost
	return s
}

// lostFail is the router's final for a request whose node lost was lost.
func lostFail(lost string) step {
	return step{from: "router", kind: "fail", code: wire.CodeNoCapacity, lost: lost}
}

// wire protocol actors of one test: every request runs its steps on its
// own goroutine; cancels and outcomes are recorded.
type actors struct {
	srv     *nats.Conn
	c       *client.Client
	mu      sync.Mutex
	dropped []client.Dropped
	cancels []string // per fed.cancel.<id>: its Fed-Node ("" = every node)
	// cancelKeys: each cancel's Fed-Cancel-Key; reqKey: the first request's
	cancelKeys []string
	reqKey     string
	dupes      []string // nodes of duplicate outcomes
	cancelCh   chan struct{}
	// sent: every message each node sent (or lost on the way), by Fed-Seq,
	// for its replay endpoint; replay: how node answers a replay (replayOK
	// unless set); replays: the replay requests received.
	sent    map[string]map[int]*nats.Msg
	replay  map[string]string
	replays []api.ReplayRequest
	// again: the steps for the 2nd, 3rd, … request (continuations; more
	// get no answer); continued: each such request's Fed-Continue-Seq and
	// Fed-Continue-Text (decoded) as "seq:text".
	again     [][]step
	arrivals  int
	continued []string
}

// How a hand-written node answers fed.node.<id>.replay.
const (
	replayOK      = ""        // the range from its sent messages; 404 for what it never sent
	replay404     = "404"     // always 404: it no longer holds the stream
	replayTimeout = "timeout" // never answers
	replayDup     = "dup"     // the range, the message before it too, and all of it twice
)

func newActors(t *testing.T, steps []step) *actors {
	t.Helper()
	s := natsembed.StartForTest(t)
	a := &actors{srv: natsembed.ConnectForTest(t, s), cancelCh: make(chan struct{}, 8)}
	c, err := client.New(natsembed.ConnectForTest(t, s), client.WithDropped(func(d client.Dropped) {
		a.mu.Lock()
		a.dropped = append(a.dropped, d)
		a.mu.Unlock()
	}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	a.c = c
	_, err = a.srv.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) {
		a.mu.Lock()
		a.cancels = append(a.cancels, m.Header.Get(wire.HdrNode))
		a.cancelKeys = append(a.cancelKeys, m.Header.Get(wire.HdrCancelKey))
		a.mu.Unlock()
		a.cancelCh <- struct{}{}
	})
	require.NoError(t, err)
	_, err = a.srv.Subscribe(subject.Default.ClientDuplicateAll(), func(m *nats.Msg) {
		var o record.Outcome
		if json.Unmarshal(m.Data, &o) == nil && o.Kind == record.OutcomeDuplicate {
			a.mu.Lock()
			a.dupes = append(a.dupes, o.NodeID)
			a.mu.Unlock()
		}
	})
	require.NoError(t, err)
	a.sent, a.replay = map[string]map[int]*nats.Msg{}, map[string]string{}
	_, err = a.srv.Subscribe(subject.Default.NodeReplay("*"), a.answerReplay)
	require.NoError(t, err)
	serve(t, a.srv, wire.CapGenerate, func(m *nats.Msg) {
		a.mu.Lock()
		n := a.arrivals
		a.arrivals++
		if n == 0 {
			a.reqKey = m.Header.Get(wire.HdrCancelKey)
		}
		run := steps
		if n > 0 {
			text, _ := base64.StdEncoding.DecodeString(m.Header.Get(wire.HdrContinueText))
			a.continued = append(a.continued, m.Header.Get(wire.HdrContinueSeq)+":"+string(text))
			run = nil
			if n <= len(a.again) {
				run = a.again[n-1]
			}
		}
		a.mu.Unlock()
		go a.run(m, run)
	})
	return a
}

// answerReplay is a node's replay endpoint, answering from what it sent.
func (a *actors) answerReplay(m *nats.Msg) {
	node := strings.Split(m.Subject, ".")[2]
	var req api.ReplayRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		_ = wire.RespondError(a.srv, m.Reply, wire.Errorf(wire.CodeBadRequest, "bad body: %v", err))
		return
	}
	a.mu.Lock()
	a.replays = append(a.replays, req)
	mode, sent := a.replay[node], a.sent[node]
	var out []*nats.Msg
	from := req.FromSeq
	if mode == replayDup {
		from--
	}
	for seq := from; seq <= req.ToSeq; seq++ {
		if sent[seq] == nil {
			out = nil
			break
		}
		out = append(out, sent[seq])
	}
	a.mu.Unlock()
	if mode == replayDup {
		out = append(out, out...)
	}
	switch {
	case mode == replayTimeout:
		return
	case mode == replay404 || len(out) == 0:
		_ = wire.RespondError(a.srv, m.Reply, wire.Errorf(wire.CodeNotFound, "node %s does not hold request %s", node, req.RequestID))
		return
	}
	for _, o := range out {
		r := &nats.Msg{Subject: o.Subject, Header: nats.Header{}, Data: o.Data}
		for k, v := range o.Header {
			r.Header[k] = v
		}
		r.Header.Set(wire.HdrReplay, "true")
		_ = a.srv.PublishMsg(r)
	}
	b, _ := json.Marshal(api.ReplayResponse{Sent: len(out)})
	_ = m.Respond(b)
}

// send publishes a node's message (unless lost) and keeps it for a replay.
func (a *actors) send(from string, m *nats.Msg, lost bool) {
	if from != "router" {
		seq, _ := strconv.Atoi(m.Header.Get(wire.HdrSeq))
		a.mu.Lock()
		if a.sent[from] == nil {
			a.sent[from] = map[int]*nats.Msg{}
		}
		a.sent[from][seq] = m
		a.mu.Unlock()
	}
	if !lost {
		_ = a.srv.PublishMsg(m)
	}
}

func (a *actors) run(m *nats.Msg, steps []step) {
	id := m.Header.Get(wire.HdrRequestID)
	replies := map[string]*wire.Reply{}
	reply := func(from, takeover string) *wire.Reply {
		if r := replies[from]; r != nil {
			return r
		}
		r := &wire.Reply{Inbox: m.Reply, RequestID: id, Takeover: takeover}
		if from != "router" {
			r.Node = from
		}
		replies[from] = r
		return r
	}
	for _, s := range steps {
		r := reply(s.from, s.takeover)
		switch s.kind {
		case "chunk":
			a.send(s.from, r.Chunk([]byte(s.data)), false)
		case "lose":
			a.send(s.from, r.Chunk([]byte(s.data)), true)
		case "done", "lose-done":
			var data []byte
			if s.data != "" {
				data = []byte(s.data)
			}
			a.send(s.from, r.Done(data, wire.DoneInfo{Tokens: 1}), s.kind == "lose-done")
		case "fail":
			f := r.Fail(s.code, "from "+s.from)
			if s.lost != "" {
				f.Header.Set(wire.HdrLostNode, s.lost)
			}
			a.send(s.from, f, false)
		case "skip":
			r.Chunk(nil)
		case "start": // a continuation's node: its first message has Fed-Seq s.code
			r.StartAt(s.code)
		case "garbage":
			inbox := m.Reply[:strings.LastIndexByte(m.Reply, '.')+1] + "never-issued"
			g := &wire.Reply{Inbox: inbox, RequestID: id, Node: s.from}
			_ = a.srv.PublishMsg(g.Chunk([]byte("?")))
		case "wait-cancel":
			select {
			case <-a.cancelCh:
			case <-time.After(natsembed.WaitFor):
			}
		}
	}
}

func (a *actors) snapshot() ([]client.Dropped, []string, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]client.Dropped(nil), a.dropped...), append([]string(nil), a.cancels...), append([]string(nil), a.dupes...)
}

// finalCase is one request against hand-written responders: what the
// caller gets, and what the Client drops, cancels and reports.
type finalCase struct {
	name    string
	stream  bool
	timeout time.Duration // 0: 5 s
	steps   []step
	body    string // the answer; "" with code
	code    int
	lost    bool     // the code's description says the stream lost messages
	chunks  []string // streamed, with code: the chunks the caller got before the error
	dropped []client.Dropped
	cancels []string // Fed-Node of each cancel published
	dupes   []string // nodes reported with a duplicate outcome
	resumed int64    // Client.Resumed after the request
	node    string   // with body: the answer's Fed-Node, when set
	desc    string   // with code: part of the error's description
	// replay: how each node answers a replay request (replayOK unless
	// named); replays: the requests the client made, in order;
	// replayed: Client.Replayed after the request.
	replay   map[string]string
	replays  []api.ReplayRequest
	replayed int64
	// retried: a replay nobody answers is asked again (at least twice in
	// ReplayPatience), each time for the same range as replays[0]
	retried bool
	// noResume sends Fed-No-Resume (no continuation after a lost node);
	// again are the steps answering each continuation, continued the
	// continuations expected ("seq:text", seq "" for a plain resend).
	noResume  bool
	again     [][]step
	continued []string
}

func late(node string, final bool) client.Dropped {
	return client.Dropped{Node: node, Final: final, Late: true}
}

// A request ends with exactly one final for the caller; whatever the mesh
// sends after it is dropped, counted and reported, never a second answer.
func TestExactlyOneFinal(t *testing.T) {
	runFinalCases(t, []finalCase{
		{name: "router error after a node's final", steps: []step{done("n1", "answer"), fail("router", wire.CodeTimeout)},
			body: "answer", dropped: []client.Dropped{late("", true)}},
		{name: "router error after a node's final, streamed", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), done("n1", ""), fail("router", wire.CodeTimeout)},
			body:  "ab", dropped: []client.Dropped{late("", true)}},
		{name: "router error after a node took the request", stream: true,
			steps: []step{chunk("n1", "a"), fail("router", wire.CodeNoCapacity), chunk("n1", "b"), done("n1", "")},
			body:  "ab", dropped: []client.Dropped{late("", true)}},
		{name: "node's done after the router's 504", steps: []step{fail("router", wire.CodeTimeout), done("n1", "too late")},
			code: wire.CodeTimeout, dropped: []client.Dropped{late("n1", true)}},
		{name: "node's stream after the router's 503: told to stop", stream: true,
			steps: []step{fail("router", wire.CodeNoCapacity), chunk("n1", "x"), chunk("n1", "y"), done("n1", "")},
			code:  wire.CodeNoCapacity, dropped: []client.Dropped{late("n1", false), late("n1", false), late("n1", true)},
			cancels: []string{"n1"}},
		{name: "two dones from two nodes", steps: []step{done("n1", "one"), {from: "n2", kind: "garbage"}, done("n2", "two")},
			body: "one", dropped: []client.Dropped{{Node: "n2", Final: true, Late: true, Duplicate: true}},
			dupes: []string{"n2"}},
		{name: "two streams from two nodes", stream: true,
			steps: []step{chunk("n1", "A"), chunk("n2", "B"), done("n1", ""), chunk("n2", "B"), done("n2", "")},
			body:  "A", dropped: []client.Dropped{{Node: "n2", Duplicate: true}, late("n2", false), late("n2", true)},
			cancels: []string{"n2"}, dupes: []string{"n2"}},
		{name: "node's 499 after the caller's deadline", timeout: 200 * time.Millisecond,
			steps: []step{chunk("n1", "x"), {kind: "wait-cancel"}, fail("n1", wire.CodeCanceled)},
			code:  wire.CodeTimeout, dropped: []client.Dropped{{Node: "n1", Final: true, Late: true, EndedByCaller: true}},
			cancels: []string{""}},
		// Completeness: the final's Fed-Seq is the number of chunks before it.
		{name: "final's Fed-Seq beyond the chunks received", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), {from: "n1", kind: "skip"}, done("n1", "")},
			code:  wire.CodeInternal, lost: true, chunks: []string{"a", "b"}, replays: []api.ReplayRequest{rr(2, 2)}},
		{name: "whole answer's Fed-Seq beyond the chunks received",
			steps: []step{chunk("n1", "a"), {from: "n1", kind: "skip"}, done("n1", "b")},
			code:  wire.CodeInternal, lost: true, replays: []api.ReplayRequest{rr(1, 1)}},
		{name: "lost chunk, then the rest is late", stream: true,
			steps: []step{chunk("n1", "a"), {from: "n1", kind: "skip"}, chunk("n1", "c"), done("n1", "")},
			code:  wire.CodeInternal, lost: true, chunks: []string{"a"}, dropped: []client.Dropped{late("n1", true)},
			replays: []api.ReplayRequest{rr(1, 1)}},
	})
}

// A node that takes over a lost node's request (Fed-Takeover) replaces it
// for the caller: chunks it resends are skipped, the answer is whole and
// once; a router's Fed-Lost-Node final replaces the lost node's final.
// The lost node's later messages are late, a takeover naming a node the
// Client did not keep is a duplicate.
func TestTakeover(t *testing.T) {
	runFinalCases(t, []finalCase{
		{name: "whole answer taken over before any message",
			steps: []step{tdone("n2", "n1", "answer"), done("n1", "slow")},
			body:  "answer", node: "n2", resumed: 1, dropped: []client.Dropped{late("n1", true)}},
		{name: "stream taken over at chunk 2: resent chunks skipped", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"),
				tchunk("n2", "n1", "a"), tchunk("n2", "n1", "b"), tchunk("n2", "n1", "c"), tchunk("n2", "n1", "d"), tdone("n2", "n1", "")},
			body: "abcd", node: "n2", resumed: 1},
		{name: "stream taken over before any chunk", stream: true,
			steps: []step{tchunk("n2", "n1", "a"), tchunk("n2", "n1", "b"), tdone("n2", "n1", "")},
			body:  "ab", node: "n2", resumed: 1},
		{name: "the lost node's messages after the takeover are late", stream: true,
			steps: []step{chunk("n1", "a"), tchunk("n2", "n1", "a"), chunk("n1", "b"), tchunk("n2", "n1", "b"),
				tdone("n2", "n1", ""), done("n1", "")},
			body: "ab", node: "n2", resumed: 1, dropped: []client.Dropped{late("n1", false), late("n1", true)},
			cancels: []string{"n1"}},
		{name: "taken over twice", stream: true,
			steps: []step{chunk("n1", "a"), tchunk("n2", "n1", "a"), tchunk("n2", "n1", "b"),
				tchunk("n3", "n2", "a"), tchunk("n3", "n2", "b"), tchunk("n3", "n2", "c"), tdone("n3", "n2", "")},
			body: "abc", node: "n3", resumed: 1},
		{name: "lost twice, the second node before it sent anything: the third names both", stream: true,
			steps: []step{chunk("n1", "a"), tchunk("n3", "n1,n2", "a"), tchunk("n3", "n1,n2", "b"), tdone("n3", "n1,n2", "")},
			body:  "ab", node: "n3", resumed: 1},
		{name: "lost twice, then no node: the Fed-Lost-Node final names both", stream: true, noResume: true,
			steps: []step{chunk("n1", "a"), lostFail("n1,n2"), chunk("n1", "b")},
			code:  wire.CodeNoCapacity, desc: "from router", chunks: []string{"a"},
			dropped: []client.Dropped{late("n1", false)}, cancels: []string{"n1"}},
		{name: "takeover naming a node the client did not keep is a duplicate", stream: true,
			steps: []step{chunk("n1", "a"), tchunk("n2", "n3", "a"), chunk("n1", "b"), done("n1", "")},
			body:  "ab", node: "n1", dropped: []client.Dropped{{Node: "n2", Duplicate: true}},
			cancels: []string{"n2"}, dupes: []string{"n2"}},
		{name: "takeover node skips a chunk: a gap", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), tchunk("n2", "n1", "a"), tchunk("n2", "n1", "b"),
				{from: "n2", kind: "skip", takeover: "n1"}, tchunk("n2", "n1", "d"), tdone("n2", "n1", "")},
			code: wire.CodeInternal, lost: true, chunks: []string{"a", "b"}, resumed: 1,
			dropped: []client.Dropped{late("n2", true)}, replays: []api.ReplayRequest{rr(2, 2)}},
		{name: "takeover node's done before the chunks received", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), tdone("n2", "n1", "")},
			code:  wire.CodeInternal, desc: "took over from n1 and ended at Fed-Seq 0, before the 2 chunks", chunks: []string{"a", "b"},
			resumed: 1},
		{name: "takeover node's error while resending ends the request", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), tchunk("n2", "n1", "a"), tfail("n2", "n1", wire.CodeNoCapacity)},
			code:  wire.CodeNoCapacity, desc: "from n2", chunks: []string{"a", "b"}, resumed: 1},
		{name: "Fed-Lost-Node final after chunks ends a Fed-No-Resume stream", stream: true, noResume: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), lostFail("n1"), chunk("n1", "c"), done("n1", "")},
			code:  wire.CodeNoCapacity, desc: "from router", chunks: []string{"a", "b"},
			dropped: []client.Dropped{late("n1", false), late("n1", true)}, cancels: []string{"n1"}},
		{name: "Fed-Lost-Node final before any message",
			steps: []step{lostFail("n1"), done("n1", "slow")},
			code:  wire.CodeNoCapacity, desc: "from router", dropped: []client.Dropped{late("n1", true)}},
		{name: "Fed-Lost-Node final naming another node is late", stream: true,
			steps: []step{chunk("n1", "a"), lostFail("n9"), chunk("n1", "b"), done("n1", "")},
			body:  "ab", node: "n1", dropped: []client.Dropped{late("", true)}},
		{name: "takeover after the Fed-Lost-Node final is late",
			steps: []step{lostFail("n1"), tdone("n2", "n1", "x")},
			code:  wire.CodeNoCapacity, dropped: []client.Dropped{late("n2", true)}},
	})
}

// startAt makes node's next message carry Fed-Seq seq (a continuation).
func startAt(node string, seq int) step { return step{from: node, kind: "start", code: seq} }

// A stream whose node was lost (a router's Fed-Lost-Node final) is sent
// again with the chunks the caller has (Fed-Continue-Seq, -Text); the
// node that continues it streams only what follows. At most MaxContinues
// times; never with Fed-No-Resume; a plain resend before any chunk.
func TestContinueLostStream(t *testing.T) {
	runFinalCases(t, []finalCase{
		{name: "continued after two chunks", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), lostFail("n1")},
			again: [][]step{{startAt("n2", 2), chunk("n2", "c"), done("n2", "")}},
			body:  "abc", node: "n2", resumed: 1, continued: []string{"2:ab"}},
		{name: "lost before any chunk: sent again as it was", stream: true,
			steps: []step{lostFail("n1")},
			again: [][]step{{chunk("n2", "x"), done("n2", "")}},
			body:  "x", node: "n2", resumed: 1, continued: []string{":"}},
		{name: "the continuation lost too: continued again", stream: true,
			steps: []step{chunk("n1", "a"), lostFail("n1")},
			again: [][]step{{startAt("n2", 1), chunk("n2", "b"), lostFail("n2")},
				{startAt("n3", 2), chunk("n3", "c"), done("n3", "")}},
			body: "abc", node: "n3", resumed: 1, continued: []string{"1:a", "2:ab"}},
		{name: "at most MaxContinues continuations", stream: true,
			steps: []step{chunk("n1", "a"), lostFail("n1")},
			again: [][]step{{lostFail("n1")}, {lostFail("n1")}},
			code:  wire.CodeNoCapacity, desc: "from router", chunks: []string{"a"}, resumed: 1,
			continued: []string{"1:a", "1:a"}},
		{name: "the lost node's later chunks are late", stream: true,
			steps: []step{chunk("n1", "a"), lostFail("n1"), chunk("n1", "b")},
			again: [][]step{{startAt("n2", 1), chunk("n2", "B"), done("n2", "")}},
			body:  "aB", node: "n2", resumed: 1, continued: []string{"1:a"},
			dropped: []client.Dropped{late("n1", false)}, cancels: []string{"n1"}},
		{name: "a continuation that restarts at 0 is a gap, not a spliced answer", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), lostFail("n1")},
			again: [][]step{{chunk("n2", "a"), done("n2", "")}},
			code:  wire.CodeInternal, lost: true, chunks: []string{"a", "b"}, resumed: 1, continued: []string{"2:ab"},
			dropped: []client.Dropped{late("n2", true)}},
		{name: "Fed-No-Resume: no continuation", stream: true, noResume: true,
			steps: []step{chunk("n1", "a"), lostFail("n1")},
			code:  wire.CodeNoCapacity, desc: "from router", chunks: []string{"a"}},
		{name: "a whole answer is not continued (the router re-places it)",
			steps: []step{lostFail("n1")},
			code:  wire.CodeNoCapacity, desc: "from router"},
	})
}

func runFinalCases(t *testing.T, cases []finalCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newActors(t, tc.steps)
			a.mu.Lock()
			maps.Copy(a.replay, tc.replay)
			a.again = tc.again
			a.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), cmpOr(tc.timeout, 5*time.Second))
			defer cancel()
			req := client.Request{Capability: wire.CapGenerate, Body: []byte("hi")}
			if tc.noResume {
				req.Header = nats.Header{wire.HdrNoResume: {"true"}}
			}
			var body, node string
			var err error
			var chunks []string
			if tc.stream {
				var st *client.Stream
				st, err = a.c.InferStream(ctx, req)
				require.NoError(t, err)
				for ch, cerr := range st.Chunks() {
					if cerr != nil {
						err = cerr
						break
					}
					chunks = append(chunks, string(ch.Data))
				}
				if err == nil {
					var res *client.Response
					res, err = st.Result()
					if err == nil {
						body, node = string(res.Body), res.Node
						assert.Equal(t, body, strings.Join(chunks, ""), "the answer is the chunks joined")
					}
				}
				st.Close()
			} else {
				var res *client.Response
				res, err = a.c.Infer(ctx, req)
				if err == nil {
					body, node = string(res.Body), res.Node
				}
			}
			if tc.code != 0 {
				var we *wire.Error
				require.True(t, errors.As(err, &we), "want a *wire.Error %d, got %v (body %q)", tc.code, err, body)
				assert.Equal(t, tc.code, we.Code, we.Description)
				if tc.lost {
					assert.Contains(t, we.Description, "stream lost messages")
				}
				assert.Contains(t, we.Description, tc.desc)
				assert.Equal(t, tc.chunks, chunks, "only the chunks before the error")
			} else {
				require.NoError(t, err)
				assert.Equal(t, tc.body, body)
				if tc.node != "" {
					assert.Equal(t, tc.node, node, "the answer's node")
				}
			}

			natsembed.Eventually(t, 0, func() error {
				d, c, u := a.snapshot()
				return natsembed.Check(len(d) >= len(tc.dropped) && len(c) >= len(tc.cancels) && len(u) >= len(tc.dupes),
					"dropped %v, cancels %v, duplicates %v", d, c, u)
			})
			d, c, u := a.snapshot()
			for i := range d {
				d[i].RequestID = "" // one request per test: ids are checked below
			}
			assert.Equal(t, tc.dropped, nilIfEmpty(d), "dropped messages")
			assert.Equal(t, tc.cancels, nilIfEmpty(c), "cancels")
			// a cancel for every node carries the request's key; one naming
			// a node only the key's digest for it (every node hears it)
			a.mu.Lock()
			require.NotEmpty(t, a.reqKey, "the request carries a cancel key")
			for i, node := range a.cancels {
				want := a.reqKey
				if node != "" {
					want = wire.WithdrawKey(a.reqKey, node)
				}
				assert.Equal(t, want, a.cancelKeys[i], "key of the cancel naming %q", node)
			}
			a.mu.Unlock()
			assert.Equal(t, tc.dupes, nilIfEmpty(u), "duplicate outcomes")
			var nLate int64
			for _, x := range tc.dropped {
				if x.Late {
					nLate++
				}
			}
			assert.Equal(t, nLate, a.c.LateMessages())
			assert.EqualValues(t, len(tc.dupes), a.c.Duplicates())
			assert.Equal(t, tc.resumed, a.c.Resumed(), "requests resumed")
			assert.Equal(t, tc.replayed, a.c.Replayed(), "messages recovered by a replay")
			a.mu.Lock()
			replays := nilIfEmpty(a.replays)
			a.mu.Unlock()
			for i := range replays {
				replays[i].RequestID = ""
			}
			if tc.retried {
				// a failover's reconnect: asked again every ReplayRetryPause
				// for ReplayPatience, then the gap is the error below
				assert.GreaterOrEqual(t, len(replays), 2, "an unanswered replay is asked again")
				for _, r := range replays {
					assert.Equal(t, tc.replays[0], r, "the same range each time")
				}
			} else {
				assert.Equal(t, tc.replays, replays, "replay requests")
			}
			a.mu.Lock()
			continued := nilIfEmpty(a.continued)
			a.mu.Unlock()
			assert.Equal(t, tc.continued, continued, "continuations sent")
		})
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// A request whose headers alone cannot fit one NATS message is a typed
// 413 naming the limit, and nothing is published; a body that does not
// fit goes out of band (blob_test.go), and without a blob store it is a
// 503 naming it.
func TestRequestTooLarge(t *testing.T) {
	srv, c := setup(t)
	got := make(chan int, 4)
	serve(t, srv, wire.CapGenerate, func(m *nats.Msg) {
		got <- len(m.Data)
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{}))
	})
	limit := srv.MaxPayload()
	cases := []struct {
		name   string
		stream bool
		header int // bytes of an extra header
		body   int
	}{
		{"headers alone over the limit", false, int(limit) + 1, 0},
		{"headers fit max_payload, not its inline part", false, int(limit) - 200, 0},
		{"streamed", true, int(limit) + 1, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := client.Request{Capability: wire.CapGenerate, Body: make([]byte, tc.body), RequestID: "big-1",
				Header: nats.Header{"X-Big": {strings.Repeat("h", tc.header)}}}
			var err error
			if tc.stream {
				_, err = c.InferStream(context.Background(), req)
			} else {
				_, err = c.Infer(context.Background(), req)
			}
			var we *wire.Error
			require.True(t, errors.As(err, &we), "got %v", err)
			assert.Equal(t, wire.CodeTooLarge, we.Code)
			assert.Equal(t, "big-1", we.RequestID)
			assert.Contains(t, we.Description, "max_payload of 1048576 bytes")
			assert.NotContains(t, err.Error(), nats.ErrMaxPayload.Error())
		})
	}
	// A body too large for one message with no blob store to carry it.
	_, err := c.Infer(context.Background(), client.Request{Capability: wire.CapGenerate, Body: make([]byte, limit+1), RequestID: "big-2"})
	var we *wire.Error
	require.ErrorAs(t, err, &we)
	assert.Equal(t, wire.CodeNoCapacity, we.Code)
	assert.Contains(t, we.Description, "blob store is not available")
	// The next request that fits is the first the mesh sees.
	_, err = c.Infer(context.Background(), client.Request{Capability: wire.CapGenerate, Body: make([]byte, limit-16384)})
	require.NoError(t, err)
	assert.EqualValues(t, limit-16384, <-got, "no oversized request was published")
}

func lose(from, data string) step { return step{from: from, kind: "lose", data: data} }

// loseDone is a final sent (the node can replay it) but lost on the way.
func loseDone(from string) step { return step{from: from, kind: "lose-done"} }

// tlose is a chunk lost on the way from a node that took over from lost.
func tlose(from, lost, data string) step { s := lose(from, data); s.takeover = lost; return s }

func rr(from, to int) api.ReplayRequest { return api.ReplayRequest{FromSeq: from, ToSeq: to} }

// A message lost on the way (a server failover) leaves a gap in Fed-Seq:
// the client holds what came after it, asks the node to replay the
// missing ones (fed.node.<id>.replay) and delivers in order; a gap the
// replay cannot fill ends in the "stream lost messages" error.
func TestReplay(t *testing.T) {
	runFinalCases(t, []finalCase{
		{name: "a lost middle chunk recovered", stream: true,
			steps: []step{chunk("n1", "a"), lose("n1", "b"), chunk("n1", "c"), chunk("n1", "d"), done("n1", "")},
			body:  "abcd", node: "n1", replays: []api.ReplayRequest{rr(1, 1)}, replayed: 1},
		{name: "the last chunks before the final lost and recovered", stream: true,
			steps: []step{chunk("n1", "a"), lose("n1", "b"), lose("n1", "c"), done("n1", "")},
			body:  "abc", node: "n1", replays: []api.ReplayRequest{rr(1, 2)}, replayed: 2},
		{name: "the first chunk lost, whole answer", steps: []step{lose("n1", "a"), done("n1", "b")},
			body: "ab", node: "n1", replays: []api.ReplayRequest{rr(0, 0)}, replayed: 1},
		{name: "two gaps, two replays", stream: true,
			steps: []step{lose("n1", "a"), chunk("n1", "b"), lose("n1", "c"), lose("n1", "d"), chunk("n1", "e"), done("n1", "")},
			body:  "abcde", node: "n1", replays: []api.ReplayRequest{rr(0, 0), rr(2, 3)}, replayed: 3},
		{name: "at most 3 replays per request", stream: true,
			steps: []step{lose("n1", "a"), chunk("n1", "b"), lose("n1", "c"), chunk("n1", "d"), lose("n1", "e"), chunk("n1", "f"),
				lose("n1", "g"), chunk("n1", "h"), done("n1", "")},
			code: wire.CodeInternal, lost: true, desc: "3 replays asked for already", chunks: []string{"a", "b", "c", "d", "e", "f"},
			replays: []api.ReplayRequest{rr(0, 0), rr(2, 2), rr(4, 4)}, replayed: 3, dropped: []client.Dropped{late("n1", true)}},
		{name: "replay 404: the error as before", stream: true,
			steps: []step{chunk("n1", "a"), lose("n1", "b"), chunk("n1", "c"), done("n1", "")}, replay: map[string]string{"n1": replay404},
			code: wire.CodeInternal, lost: true, desc: "expected Fed-Seq 1, got 2; replay failed: node n1", chunks: []string{"a"},
			replays: []api.ReplayRequest{rr(1, 1)}, dropped: []client.Dropped{late("n1", true)}},
		{name: "replay timeout: an error", stream: true,
			steps: []step{chunk("n1", "a"), lose("n1", "b"), chunk("n1", "c"), done("n1", "")}, replay: map[string]string{"n1": replayTimeout},
			code: wire.CodeInternal, lost: true, desc: "replay failed: node n1", chunks: []string{"a"},
			replays: []api.ReplayRequest{rr(1, 1)}, retried: true, dropped: []client.Dropped{late("n1", true)}},
		{name: "a lost final: the quiet stream asks for its next Fed-Seq", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), loseDone("n1")},
			body:  "ab", node: "n1", replays: []api.ReplayRequest{rr(2, 2)}, replayed: 1},
		{name: "a replayed duplicate is dropped silently", stream: true,
			steps: []step{chunk("n1", "a"), lose("n1", "b"), chunk("n1", "c"), done("n1", "")}, replay: map[string]string{"n1": replayDup},
			body: "abc", node: "n1", replays: []api.ReplayRequest{rr(1, 1)}, replayed: 1},
		{name: "a gap in a takeover stream recovered from the takeover node", stream: true,
			steps: []step{chunk("n1", "a"), chunk("n1", "b"), tchunk("n2", "n1", "a"), tchunk("n2", "n1", "b"),
				tlose("n2", "n1", "c"), tchunk("n2", "n1", "d"), tdone("n2", "n1", "")},
			body: "abcd", node: "n2", resumed: 1, replays: []api.ReplayRequest{rr(2, 2)}, replayed: 1},
		{name: "a replay from a node the client does not keep is ignored", stream: true,
			steps: []step{chunk("n1", "a"), lose("n2", "x"), lose("n1", "b"), chunk("n1", "c"), done("n1", "")},
			body:  "abc", node: "n1", replays: []api.ReplayRequest{rr(1, 1)}, replayed: 1},
	})
}
