package chaos

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// The expectation comes from the synthetic backend itself: token i does not
// depend on the answer length, and the first token has no leading space.
func TestSynthTokens(t *testing.T) {
	long := synthTokens([]byte("hello"), 30)
	short := synthTokens([]byte("hello"), 7)
	require.Len(t, long, 30)
	require.Len(t, short, 7)
	assert.Equal(t, short, long[:7], "a shorter answer is a prefix of a longer one")
	assert.NotEqual(t, byte(' '), long[0][0])
	for _, tok := range long[1:] {
		assert.Equal(t, byte(' '), tok[0])
	}
	assert.NotEqual(t, long, synthTokens([]byte("other"), 30), "the answer depends on the prompt")
}

// wireMsgs builds what a node sends for an answer of n tokens, streamed or
// whole, as decoded messages.
func wireMsgs(t *testing.T, toks [][]byte, node string, stream bool) []message {
	t.Helper()
	at := time.Unix(100, 0)
	var out []message
	seq := 0
	if stream {
		for _, tok := range toks {
			m := nats.NewMsg("x")
			m.Data = tok
			m.Header.Set(wire.HdrNode, node)
			m.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
			out = append(out, decodeMessage(m, at))
			seq++
		}
	}
	f := nats.NewMsg("x")
	f.Header.Set(wire.HdrNode, node)
	f.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
	f.Header.Set(wire.HdrStatus, wire.StatusDone)
	f.Header.Set(wire.HdrTokens, strconv.Itoa(len(toks)))
	if !stream {
		f.Data = bytes.Join(toks, nil)
	}
	return append(out, decodeMessage(f, at))
}

func errFinal(node string, seq, code int) message {
	m := nats.NewMsg("x")
	if node != "" {
		m.Header.Set(wire.HdrNode, node)
	}
	m.Header.Set(wire.HdrSeq, strconv.Itoa(seq))
	m.Header.Set(wire.HdrStatus, wire.StatusError)
	m.Header.Set(wire.HdrServiceErrorCode, strconv.Itoa(code))
	m.Header.Set(wire.HdrServiceError, "boom")
	return decodeMessage(m, time.Unix(100, 0))
}

func TestJudge(t *testing.T) {
	body := []byte("chaos prompt")
	all := synthTokens(body, 40)
	exp := expectation{tokens: all, nodeTokens: map[string]int{"a": 5, "b": 8}}
	five := all[:5]
	stream := func(node string) []message { return wireMsgs(t, five, node, true) }
	whole := func(node string) []message { return wireMsgs(t, five, node, false) }
	drop := func(ms []message, i int) []message {
		return append(append([]message(nil), ms[:i]...), ms[i+1:]...)
	}
	dup := func(ms []message, i int) []message {
		out := append([]message(nil), ms[:i+1]...)
		out = append(out, ms[i])
		return append(out, ms[i+1:]...)
	}
	withTokens := func(ms []message, n int) []message {
		out := append([]message(nil), ms...)
		out[len(out)-1].tokens = n
		return out
	}
	corrupt := func(ms []message, i int) []message {
		out := append([]message(nil), ms...)
		out[i].data = []byte(" nope")
		return out
	}
	cases := []struct {
		name   string
		msgs   []message
		stream bool
		cut    bool
		want   Class
		code   int
	}{
		{"stream ok", stream("a"), true, false, ClassOK, 0},
		{"whole ok", whole("a"), false, false, ClassOK, 0},
		{"nothing", nil, true, false, ClassSilence, 0},
		{"chunks, no final", stream("a")[:3], true, false, ClassSilence, 0},
		{"missing chunk", drop(stream("a"), 2), true, false, ClassGap, 0},
		{"repeated chunk", dup(stream("a"), 1), true, false, ClassGap, 0},
		{"final seq counts a lost chunk", drop(stream("a"), 4), true, false, ClassGap, 0},
		{"Fed-Tokens says more than arrived", withTokens(stream("a"), 6), true, false, ClassGap, 0},
		{"wrong token", corrupt(stream("a"), 3), true, false, ClassWrong, 0},
		{"whole answer differs", corrupt(whole("a"), 0), false, false, ClassWrong, 0},
		{"shorter than the node answers", stream("b"), true, false, ClassWrong, 0},
		{"unknown node", stream("zz"), true, false, ClassWrong, 0},
		{"two node finals", append(stream("a"), whole("b")...), true, false, ClassDouble, 0},
		{"node and router finals", append(whole("a"), errFinal("", 0, 504)), false, false, ClassDouble, 0},
		{"chunk after the final", append(whole("a"), stream("a")[0]), false, false, ClassAfter, 0},
		{"router error", []message{errFinal("", 0, 503)}, false, false, ClassError, 503},
		{"node error mid-stream", append(stream("a")[:2], errFinal("a", 2, 500)), true, false, ClassError, 500},
		{"failure on a cut connection", stream("a")[:2], true, true, ClassCut, 0},
		{"success on a cut connection stays ok", stream("a"), true, true, ClassOK, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.msgs, tc.stream, tc.cut, exp)
			assert.Equal(t, tc.want, v.Class, v.Detail)
			assert.Equal(t, tc.code, v.Code)
		})
	}
}

// takenOver marks what a node sends for a request it took over from lost.
func takenOver(ms []message, lost string) []message {
	out := append([]message(nil), ms...)
	for i := range out {
		out[i].takeover = lost
	}
	return out
}

// lostFinal is the router's 503 for a request whose node lost was lost.
func lostFinal(lost string) message {
	m := errFinal("", 0, wire.CodeNoCapacity)
	m.lostNode = lost
	return m
}

func cat(parts ...[]message) []message {
	var out []message
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// The client rules for a lost node (DESIGN §4): a node that took over
// (Fed-Takeover naming the kept node) replaces it and resends from Fed-Seq
// 0, the client skips what it has; a router's Fed-Lost-Node 503 is the
// final; the replaced node's later messages are dropped, not second answers.
func TestJudgeTakeover(t *testing.T) {
	all := synthTokens([]byte("resume"), 10)
	exp := expectation{tokens: all, nodeTokens: map[string]int{"a": 5, "b": 8, "c": 5, "d": 2, "e": 5}}
	stream := func(node string) []message { return wireMsgs(t, all[:exp.nodeTokens[node]], node, true) }
	whole := func(node string) []message { return wireMsgs(t, all[:exp.nodeTokens[node]], node, false) }
	a, c := stream("a"), takenOver(stream("c"), "a")
	corrupt := func(ms []message, i int) []message {
		out := append([]message(nil), ms...)
		out[i].data = []byte(" nope")
		return out
	}
	drop := func(ms []message, i int) []message {
		return append(append([]message(nil), ms[:i]...), ms[i+1:]...)
	}
	cases := []struct {
		name       string
		msgs       []message
		stream     bool
		want       Class
		code       int
		takenOver  bool
		lostNode   string
		superseded int
	}{
		{name: "stream taken over at chunk 3", msgs: cat(a[:3], c), stream: true, want: ClassOK, takenOver: true},
		{name: "stream taken over before any chunk", msgs: c, stream: true, want: ClassOK, takenOver: true},
		{name: "taken over by a node with a longer answer", msgs: cat(a[:3], takenOver(stream("b"), "a")), stream: true,
			want: ClassOK, takenOver: true},
		{name: "taken over by a node with an answer shorter than the chunks received", msgs: cat(a[:3], takenOver(stream("d"), "a")),
			stream: true, want: ClassWrong, takenOver: true},
		{name: "whole answer taken over", msgs: takenOver(whole("c"), "a"), want: ClassOK, takenOver: true},
		{name: "taken over twice", msgs: cat(a[:2], c[:3], takenOver(stream("e"), "c")), stream: true, want: ClassOK, takenOver: true},
		{name: "a resent chunk differs", msgs: cat(a[:3], corrupt(c, 1)), stream: true, want: ClassWrong, takenOver: true},
		{name: "the takeover node skips a chunk", msgs: cat(a[:3], drop(c, 3)), stream: true, want: ClassGap, takenOver: true},
		{name: "the takeover node's error while resending", msgs: cat(a[:3], c[:1], takenOver([]message{errFinal("c", 1, 503)}, "a")), stream: true,
			want: ClassError, code: 503, takenOver: true},
		{name: "takeover naming a node the client did not keep", msgs: cat(a[:3], takenOver(stream("c"), "zz"), a[3:]), stream: true,
			want: ClassDouble},
		{name: "lost node's messages after the takeover are dropped", msgs: cat(a[:3], c[:4], a[3:], c[4:]), stream: true,
			want: ClassOK, takenOver: true, superseded: 3},
		{name: "lost node's final before the takeover: two finals", msgs: cat(a, c), stream: true, want: ClassDouble},
		{name: "Fed-Lost-Node 503 after chunks", msgs: cat(a[:3], []message{lostFinal("a")}), stream: true,
			want: ClassError, code: 503, lostNode: "a"},
		{name: "Fed-Lost-Node 503 before any message", msgs: []message{lostFinal("a")}, want: ClassError, code: 503, lostNode: "a"},
		{name: "the lost node's final after the Fed-Lost-Node 503", msgs: cat(a[:3], []message{lostFinal("a")}, a[3:]), stream: true,
			want: ClassError, code: 503, lostNode: "a", superseded: 3},
		{name: "Fed-Lost-Node naming another node: a second final", msgs: cat(a[:3], []message{lostFinal("zz")}, a[3:]), stream: true,
			want: ClassDouble},
		{name: "takeover after the Fed-Lost-Node 503", msgs: cat([]message{lostFinal("a")}, takenOver(whole("c"), "a")),
			want: ClassDouble, lostNode: "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.msgs, tc.stream, false, exp)
			assert.Equal(t, tc.want, v.Class, v.Detail)
			assert.Equal(t, tc.code, v.Code)
			assert.Equal(t, tc.takenOver, v.TakenOver, "taken over")
			assert.Equal(t, tc.lostNode, v.LostNode, "lost node")
			assert.Equal(t, tc.superseded, v.Superseded, "superseded")
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	cases := []struct {
		name   string
		hdr    map[string]string
		data   string
		final  bool
		code   int
		seq    int
		status string
	}{
		{"chunk", map[string]string{wire.HdrSeq: "3", wire.HdrNode: "a"}, "x", false, 0, 3, ""},
		{"done", map[string]string{wire.HdrSeq: "0", wire.HdrStatus: "done"}, "x", true, 0, 0, "done"},
		{"micro error without Fed-Status", map[string]string{wire.HdrServiceErrorCode: "404"}, "", true, 404, -1, "error"},
		{"unparsable code is 500", map[string]string{wire.HdrServiceErrorCode: "teapot"}, "", true, 500, -1, "error"},
		{"no responders", map[string]string{"Status": "503"}, "", true, 503, -1, "error"},
		{"negative seq", map[string]string{wire.HdrSeq: "-1"}, "x", false, 0, -1, ""},
		{"no headers", nil, "x", false, 0, -1, ""},
		{"takeover chunk", map[string]string{wire.HdrSeq: "2", wire.HdrNode: "b", wire.HdrTakeover: "a"}, "x", false, 0, 2, ""},
		{"lost-node final", map[string]string{wire.HdrSeq: "0", wire.HdrStatus: "error", wire.HdrServiceErrorCode: "503", wire.HdrLostNode: "a"}, "", true, 503, 0, "error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &nats.Msg{Subject: "x", Data: []byte(tc.data)}
			if tc.hdr != nil {
				m.Header = nats.Header{}
				for k, v := range tc.hdr {
					m.Header.Set(k, v)
				}
			}
			d := decodeMessage(m, time.Now())
			assert.Equal(t, tc.final, d.final())
			assert.Equal(t, tc.code, d.code)
			assert.Equal(t, tc.seq, d.seq)
			assert.Equal(t, tc.status, d.status)
			assert.Equal(t, tc.hdr[wire.HdrTakeover], d.takeover)
			assert.Equal(t, tc.hdr[wire.HdrLostNode], d.lostNode)
		})
	}
}

// FuzzDecodeMessage: whatever nodes and routers send, decoding and judging
// by the client rules (takeovers, Fed-Lost-Node finals) never panic, a
// verdict always has a class, and a strict success ends with a done.
func FuzzDecodeMessage(f *testing.F) {
	f.Add("0", "done", "5", "", "", []byte("x"), true, "", "")
	f.Add("-3", "error", "", "504", "", []byte(nil), false, "a", "a")
	f.Add("99999999999999999999", "done", "-1", "x", "503", []byte(""), true, "b", "")
	f.Fuzz(func(t *testing.T, seq, status, tokens, code, st string, data []byte, stream bool, takeover, lost string) {
		build := func(node, takeover, lost string) message {
			m := nats.NewMsg("x")
			m.Data = data
			for k, v := range map[string]string{wire.HdrSeq: seq, wire.HdrStatus: status, wire.HdrTokens: tokens, wire.HdrServiceErrorCode: code,
				"Status": st, wire.HdrNode: node, wire.HdrTakeover: takeover, wire.HdrLostNode: lost} {
				if v != "" {
					m.Header.Set(k, v)
				}
			}
			return decodeMessage(m, time.Now())
		}
		a, b, r := build("a", "", ""), build("b", takeover, ""), build("", "", lost)
		exp := expectation{tokens: synthTokens([]byte("f"), 3), nodeTokens: map[string]int{"a": 3, "b": 3}}
		for _, msgs := range [][]message{{a, a}, {a, b, a, b}, {b, a, r}, {r, a, b}, {a, r, b, a}} {
			v := judge(msgs, stream, false, exp)
			if v.Class == "" {
				t.Fatalf("no class for %+v", msgs)
			}
			if v.Class == ClassOK && status != wire.StatusDone {
				t.Fatalf("strict success without a done: %+v", msgs)
			}
		}
	})
}

// Every node is configured alike, so each node is expected to give the same
// answer, its length within the configured range and varying by prompt.
func TestExpectForIsAlikeOnEveryNode(t *testing.T) {
	o := &Options{MinTokens: 20, MaxTokens: 100}
	nodes := []*node{{id: "node-1"}, {id: "node-2"}, {id: "node-3"}}
	lengths := map[int]bool{}
	for i := range 20 {
		exp := expectFor(nodes, []byte("prompt "+strconv.Itoa(i)), o)
		l := exp.nodeTokens["node-1"]
		assert.GreaterOrEqual(t, l, 20)
		assert.LessOrEqual(t, l, 100)
		assert.Equal(t, l, exp.nodeTokens["node-3"])
		assert.Len(t, exp.tokens, 100)
		lengths[l] = true
	}
	assert.Greater(t, len(lengths), 5)
}

// replayed marks messages as sent again on the client's replay request.
func replayed(ms ...message) []message {
	out := append([]message(nil), ms...)
	for i := range out {
		out[i].replay = true
	}
	return out
}

func gaveUp(why string) []message { return []message{{seq: -1, tokens: -1, giveUp: why}} }

// A gap is held for the replay the client asks for: replayed messages of
// the kept node (Fed-Replay) fill it, even after the held final; a gap the
// replay did not fill, or one the client gave up on, stays a gap.
func TestJudgeReplay(t *testing.T) {
	all := synthTokens([]byte("replay"), 10)
	exp := expectation{tokens: all, nodeTokens: map[string]int{"a": 5, "c": 5}}
	a := wireMsgs(t, all[:5], "a", true) // 5 chunks, then the final at index 5
	c := takenOver(wireMsgs(t, all[:5], "c", true), "a")
	w := wireMsgs(t, all[:5], "a", false)
	wrong := replayed(a[2])
	wrong[0].data = []byte(" nope")
	cases := []struct {
		name     string
		msgs     []message
		stream   bool
		want     Class
		replayed int
	}{
		{"a lost middle chunk replayed", cat(a[:2], a[3:5], replayed(a[2]), a[5:]), true, ClassOK, 1},
		{"the last chunks lost, replayed after the final", cat(a[:3], a[5:], replayed(a[3], a[4])), true, ClassOK, 2},
		{"two gaps, two replays", cat(a[1:2], replayed(a[0]), a[3:], replayed(a[2])), true, ClassOK, 2},
		{"a replayed chunk the client has is ignored", cat(a[:2], a[3:5], replayed(a[1], a[2], a[2]), a[5:]), true, ClassOK, 1},
		{"a replay after the final is ignored", cat(a, replayed(a[0])), true, ClassOK, 0},
		{"a gap never replayed", cat(a[:2], a[3:]), true, ClassGap, 0},
		{"the replay failed: the client gave up", cat(a[:2], a[3:], gaveUp("error 404")), true, ClassGap, 0},
		{"a replay after the client gave up does not count", cat(a[:2], a[3:], gaveUp("timeout"), replayed(a[2])), true, ClassGap, 0},
		{"a give-up mark without a gap changes nothing", cat(a, gaveUp("x")), true, ClassOK, 0},
		{"a replay from another node does not fill the gap", cat(a[:2], a[3:], replayed(wireMsgs(t, all[:5], "c", true)[2])), true, ClassGap, 0},
		{"a replayed chunk that differs", cat(a[:2], a[3:], wrong), true, ClassWrong, 1},
		{"a gap in a takeover stream replayed by the takeover node", cat(a[:2], c[:3], c[4:], replayed(c[3])), true, ClassOK, 1},
		{"a whole answer", w, false, ClassOK, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.msgs, tc.stream, false, exp)
			assert.Equal(t, tc.want, v.Class, v.Detail)
			assert.Equal(t, tc.replayed, v.Replayed, "replayed")
		})
	}
}
