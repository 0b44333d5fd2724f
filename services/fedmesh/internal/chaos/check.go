package chaos

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Class is what became of one request, as its client saw it on the wire.
type Class string

// Classes, worst first where a request has several faults.
const (
	ClassOK      Class = "ok"           // exactly one final, done, every token right, nothing after it
	ClassDouble  Class = "double final" // two or more final messages
	ClassSilence Class = "silence"      // no final before the client's deadline
	ClassGap     Class = "gap"          // missing or repeated Fed-Seq, or fewer chunks than the final's Fed-Seq / Fed-Tokens
	ClassWrong   Class = "wrong"        // a token or the answer differs from the synthetic backend's output
	ClassAfter   Class = "after final"  // a chunk arrived after the final
	ClassError   Class = "error"        // one error final (Code says which)
	ClassCut     Class = "cut"          // not ok, and the client's own connection was cut meanwhile
)

// message is one message a client received for a request.
type message struct {
	at       time.Time
	node     string // Fed-Node; "" for the router's own final
	takeover string // Fed-Takeover: the lost node this node continues for
	lostNode string // Fed-Lost-Node: on a router's final, the node that was lost
	seq      int    // Fed-Seq; -1 when absent or not a number
	status   string // Fed-Status
	code     int    // Nats-Service-Error-Code (503 for a no-responders status)
	desc     string // Nats-Service-Error: what the error final says
	tokens   int    // Fed-Tokens; -1 when absent
	replay   bool   // Fed-Replay: true, sent again on the client's replay request
	data     []byte
	// giveUp is not a message but the client's own mark: it ended the
	// request at a gap its replay requests could not fill (why).
	giveUp string
}

// decodeMessage reads the headers a third-party client keys on.
func decodeMessage(m *nats.Msg, at time.Time) message {
	out := message{at: at, seq: -1, tokens: -1, data: m.Data}
	h := m.Header
	if h == nil {
		return out
	}
	out.node = h.Get(wire.HdrNode)
	out.takeover = h.Get(wire.HdrTakeover)
	out.lostNode = h.Get(wire.HdrLostNode)
	out.status = h.Get(wire.HdrStatus)
	out.replay = h.Get(wire.HdrReplay) == "true"
	if v := h.Get(wire.HdrSeq); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			out.seq = n
		}
	}
	if v := h.Get(wire.HdrTokens); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			out.tokens = n
		}
	}
	if v := h.Get(wire.HdrServiceErrorCode); v != "" {
		out.desc = h.Get(wire.HdrServiceError)
		out.code, _ = strconv.Atoi(v)
		if out.code == 0 {
			out.code = 500 // a code that does not parse is 500 (DESIGN §3.3)
		}
		if out.status == "" {
			out.status = wire.StatusError
		}
	}
	if len(m.Data) == 0 && h.Get("Status") == "503" { // NATS no responders
		out.status, out.code = wire.StatusError, wire.CodeNoCapacity
	}
	return out
}

func (m message) final() bool { return m.status == wire.StatusDone || m.status == wire.StatusError }

// Verdict is the judgement of one request.
type Verdict struct {
	Class  Class
	Code   int    // the error final's code (ClassError), else 0
	Detail string // why, for the log
	Node   string // node of the (first) final, if any
	// TakenOver: a node took the request over from a lost one (Fed-Takeover)
	// and the client followed it. LostNode: the final is the router's
	// Fed-Lost-Node error for this node. Superseded: messages of replaced
	// nodes after they were replaced, which the client rules drop.
	TakenOver  bool
	LostNode   string
	Superseded int
	// Replayed: messages a replay request recovered and that filled a gap.
	Replayed int
	// Resent: times the client sent the request again, nobody holding it
	// (§3.8; the load sets it, not judge).
	Resent int
}

// follow applies the client rules (DESIGN §4, as shared/client does) to one
// request's messages in arrival order, the way a third-party client reads
// the wire: the first node to answer is kept and must send Fed-Seq 0, 1,
// 2, …; a node's message with Fed-Takeover naming the kept node (or any,
// while none is kept) makes that node the kept one, and its chunks below
// the next expected Fed-Seq are skipped (they must repeat what the client
// has); a router's final with Fed-Lost-Node naming the kept node (or any,
// while none is kept) is the final whatever its Fed-Seq. A replaced node's
// later messages are superseded: dropped, not a second answer.
//
// A gap (a kept node's message beyond the next expected Fed-Seq) is no
// failure at once: what comes after it is held, a replayed message
// (Fed-Replay) of the kept node fills it, and a replayed message the client
// has already, or one after the final, is ignored. The gap stays one when
// the client gave up on it (a giveUp mark) or it was never filled.
type follow struct {
	kept   string
	lost   map[string]bool
	chunks []message // accepted: Fed-Seq 0..len-1 of the kept nodes
	final  *message  // the request's final, once it came
	// exempt: the final's Fed-Seq is not checked against the chunks (a
	// Fed-Lost-Node final; a takeover node's error while it resends).
	exempt     bool
	extra      []message      // finals beyond the first that the rules do not drop
	after      int            // non-final messages after the final
	second     map[string]int // messages of a node that answered while another was kept, not taking over
	superseded int
	resent     int // chunks a takeover node sent again, skipped
	takenOver  bool
	problem    *Verdict  // the first gap or wrong resent chunk
	held       []message // the kept node's messages after a gap, by Fed-Seq
	replayed   int       // replayed messages that filled a gap
	gaveUp     bool      // the client ended the request at a gap
}

// next is the Fed-Seq the client expects next.
func (f *follow) next() int { return len(f.chunks) }

// hold keeps m until the gap before it is filled; a Fed-Seq held already
// is not held twice.
func (f *follow) hold(m message) {
	i, found := slices.BinarySearchFunc(f.held, m.seq, func(h message, s int) int { return h.seq - s })
	if !found {
		f.held = slices.Insert(f.held, i, m)
	}
}

// drain takes the held messages whose turn has come; it reports whether
// the request's final was among them.
func (f *follow) drain() bool {
	for len(f.held) > 0 {
		h := f.held[0]
		if h.node != f.kept || h.seq < f.next() {
			f.held = f.held[1:]
			continue
		}
		if h.seq > f.next() {
			return false
		}
		f.held = f.held[1:]
		if h.final() {
			f.final = &h
			f.after += len(f.held)
			f.held = nil
			return true
		}
		f.chunks = append(f.chunks, h)
	}
	return false
}

// gap is the first gap waiting for a replay: the node to ask and the
// Fed-Seqs it misses; ok false when there is none.
func (f *follow) gap() (node string, from, to int, ok bool) {
	if f.final != nil || f.gaveUp || len(f.held) == 0 || f.held[0].node != f.kept {
		return "", 0, 0, false
	}
	return f.kept, f.next(), f.held[0].seq - 1, true
}

// add takes the next message; it reports whether m is the request's final.
func (f *follow) add(m message) bool {
	if m.giveUp != "" {
		if _, from, _, ok := f.gap(); ok {
			f.fail(ClassGap, fmt.Sprintf("Fed-Seq %d missing, got %d; replay failed: %s", from, f.held[0].seq, m.giveUp))
			f.gaveUp = true
		}
		return false
	}
	if f.gaveUp { // the client ended the request at the gap: nothing more is read
		return false
	}
	if m.replay {
		if f.final != nil || m.node == "" || m.node != f.kept || m.seq < f.next() {
			return false // asked for, and not needed: ignored
		}
		if m.seq == f.next() {
			f.replayed++
		}
	}
	if m.node != "" && f.lost[m.node] {
		f.superseded++
		return false
	}
	if f.final != nil {
		if m.final() {
			f.extra = append(f.extra, m)
		} else {
			f.after++
		}
		return false
	}
	if m.node == "" {
		switch {
		case !m.final():
			f.fail(ClassGap, "a message with neither Fed-Node nor a final status")
			return false
		case m.lostNode == "":
			f.final = &m
			return true
		case f.kept == "" || wire.NamesLost(m.lostNode, f.kept):
			wire.LostList(m.lostNode, f.markLost)
			f.final, f.exempt = &m, true
			return true
		default: // names a node the client is not following: a wrong second final
			f.extra = append(f.extra, m)
			return false
		}
	}
	if m.takeover != "" && m.node != f.kept && (f.kept == "" || wire.NamesLost(m.takeover, f.kept)) {
		wire.LostList(m.takeover, f.markLost)
		f.kept, f.takenOver = m.node, true
	}
	if f.kept == "" {
		f.kept = m.node
	}
	if m.node != f.kept {
		if m.final() {
			f.extra = append(f.extra, m)
		} else {
			if f.second == nil {
				f.second = map[string]int{}
			}
			f.second[m.node]++
		}
		return false
	}
	next := len(f.chunks)
	if m.takeover != "" && m.seq >= 0 && m.seq < next { // resent by the node that took over
		switch {
		case !m.final():
			f.resent++
			if !bytes.Equal(m.data, f.chunks[m.seq].data) {
				f.fail(ClassWrong, fmt.Sprintf("%s resent Fed-Seq %d as %q, the client has %q", m.node, m.seq, m.data, f.chunks[m.seq].data))
			}
			return false
		case m.status == wire.StatusError:
			f.final, f.exempt = &m, true
			return true
		default:
			f.fail(ClassWrong, fmt.Sprintf("%s took over from %s and ended at Fed-Seq %d, the client had %d chunks", m.node, m.takeover, m.seq, next))
			f.final = &m
			return true
		}
	}
	if m.seq > next { // a gap: held until a replay fills it
		f.hold(m)
		return false
	}
	if m.final() {
		f.final = &m
		return true
	}
	switch {
	case m.seq < 0:
		f.fail(ClassGap, "chunk without Fed-Seq")
	case m.seq < next:
		f.fail(ClassGap, fmt.Sprintf("Fed-Seq %d twice", m.seq))
	default:
		f.chunks = append(f.chunks, m)
		return f.drain()
	}
	return false
}

func (f *follow) markLost(node string) {
	if f.lost == nil {
		f.lost = map[string]bool{}
	}
	f.lost[node] = true
}

func (f *follow) fail(c Class, detail string) {
	if f.problem == nil {
		f.problem = &Verdict{Class: c, Detail: detail}
	}
}

// expectation is what a correct answer looks like: token i of the prompt's
// answer and each node's answer length.
type expectation struct {
	tokens     [][]byte       // token i of the answer, as the synthetic backend emits it
	nodeTokens map[string]int // answer length per node id
}

// expectFor is what every node answers for body: the nodes are configured
// alike (tokens MinTokens … MaxTokens, the length a function of the request),
// so a stream a lost node cut continues on any other one.
func expectFor(nodes []*node, body []byte, o *Options) expectation {
	b := synthetic.New(synthetic.Config{Tokens: o.MinTokens, TokensMax: o.MaxTokens})
	res, _ := b.Generate(context.Background(), backend.Call{Capability: capability, Model: model, Body: body},
		func([]byte) error { return nil })
	lengths := make(map[string]int, len(nodes))
	for _, n := range nodes {
		lengths[n.id] = res.Tokens
	}
	return expectation{tokens: synthTokens(body, o.MaxTokens), nodeTokens: lengths}
}

// synthTokens computes the first n tokens the synthetic backend emits for
// body, with its own code (no delay): token i does not depend on the
// answer length, so one long answer serves every node's length.
func synthTokens(body []byte, n int) [][]byte {
	b := synthetic.New(synthetic.Config{Tokens: n})
	out := make([][]byte, 0, n)
	_, _ = b.Generate(context.Background(), backend.Call{Capability: capability, Model: model, Body: body},
		func(p []byte) error { out = append(out, bytes.Clone(p)); return nil })
	return out
}

// judge classifies one request from the messages its client received.
// stream says whether it asked for one; finished is false when the client
// gave up at its deadline; cut is whether its connection dropped meanwhile.
func judge(msgs []message, stream, cut bool, exp expectation) Verdict {
	v := judgeWire(msgs, stream, exp)
	if v.Class != ClassOK && cut {
		v.Detail = string(v.Class) + ": " + v.Detail
		v.Class = ClassCut
	}
	return v
}

func judgeWire(msgs []message, stream bool, exp expectation) Verdict {
	var fl follow
	for _, m := range msgs {
		fl.add(m)
	}
	v := fl.judge(stream, exp)
	v.TakenOver, v.Superseded, v.Replayed = fl.takenOver, fl.superseded, fl.replayed
	if fl.final != nil {
		v.LostNode = fl.final.lostNode
	}
	return v
}

// judge classifies what the client ended up with.
func (fl *follow) judge(stream bool, exp expectation) Verdict {
	chunks := fl.chunks
	k := len(chunks)
	if fl.final == nil {
		if p := fl.problem; fl.gaveUp && p != nil {
			return *p
		}
		if len(fl.held) > 0 {
			return Verdict{Class: ClassGap, Detail: fmt.Sprintf("Fed-Seq %d missing, got %d, never replayed", k, fl.held[0].seq)}
		}
		return Verdict{Class: ClassSilence, Detail: fmt.Sprintf("no final; %d chunks", k)}
	}
	f := *fl.final
	v := Verdict{Node: f.node}
	if len(fl.extra) > 0 {
		v.Class = ClassDouble
		v.Detail = fmt.Sprintf("%d finals:", 1+len(fl.extra))
		for i, g := range append([]message{f}, fl.extra...) {
			v.Detail += fmt.Sprintf(" %s/%s/%d", nodeName(g.node), g.status, g.code)
			if g.desc != "" { // an error final's reason says which path sent it
				v.Detail += fmt.Sprintf(" (%q)", g.desc)
			}
			if i > 0 {
				v.Detail += fmt.Sprintf(" %+.0f ms", float64(g.at.Sub(f.at).Microseconds())/1000)
			}
		}
		return v
	}
	if len(fl.second) > 0 {
		v.Class = ClassDouble
		v.Detail = "a second node answered without taking over:"
		for _, n := range slices.Sorted(maps.Keys(fl.second)) {
			v.Detail += fmt.Sprintf(" %s (%d messages)", n, fl.second[n])
		}
		return v
	}
	if p := fl.problem; p != nil {
		return Verdict{Class: p.Class, Node: f.node, Detail: p.Detail}
	}
	// Sequence: chunks carry 0..k-1 once each, the final carries k.
	if !fl.exempt && f.seq != k {
		return Verdict{Class: ClassGap, Node: f.node, Detail: fmt.Sprintf("final Fed-Seq %d after %d chunks", f.seq, k)}
	}
	if f.status == wire.StatusError {
		v.Class, v.Code = ClassError, f.code
		v.Detail = fmt.Sprintf("error %d from %s after %d chunks", f.code, nodeName(f.node), k)
		if f.lostNode != "" {
			v.Detail += " (lost node " + f.lostNode + ")"
		}
		if f.desc != "" {
			v.Detail += ": " + f.desc
		}
		return v
	}
	want, known := exp.nodeTokens[f.node]
	if !known {
		return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("done from unknown node %q", f.node)}
	}
	if want > len(exp.tokens) {
		return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("node %s answers %d tokens, expectation has %d", f.node, want, len(exp.tokens))}
	}
	if stream {
		if f.tokens >= 0 && f.tokens != k {
			return Verdict{Class: ClassGap, Node: f.node, Detail: fmt.Sprintf("Fed-Tokens %d but %d chunks", f.tokens, k)}
		}
		for _, c := range chunks {
			if c.seq >= len(exp.tokens) || !bytes.Equal(c.data, exp.tokens[c.seq]) {
				return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("chunk %d is %q", c.seq, c.data)}
			}
		}
		if k != want {
			return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("%d chunks, node %s answers %d", k, f.node, want)}
		}
		if len(f.data) != 0 {
			return Verdict{Class: ClassWrong, Node: f.node, Detail: "streamed final has a payload"}
		}
	} else {
		if k != 0 {
			return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("%d chunks for a whole answer", k)}
		}
		if !bytes.Equal(f.data, bytes.Join(exp.tokens[:want], nil)) {
			return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("answer of %d bytes differs", len(f.data))}
		}
		if f.tokens >= 0 && f.tokens != want {
			return Verdict{Class: ClassWrong, Node: f.node, Detail: fmt.Sprintf("Fed-Tokens %d, node %s answers %d", f.tokens, f.node, want)}
		}
	}
	if fl.after > 0 {
		return Verdict{Class: ClassAfter, Node: f.node, Detail: fmt.Sprintf("%d messages after the final", fl.after)}
	}
	v.Class = ClassOK
	return v
}

func nodeName(n string) string {
	if n == "" {
		return "router"
	}
	return n
}
