package chaos

import (
	"bytes"
	"context"
	"fmt"
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
	at     time.Time
	node   string // Fed-Node; "" for the router's own final
	seq    int    // Fed-Seq; -1 when absent or not a number
	status string // Fed-Status
	code   int    // Nats-Service-Error-Code (503 for a no-responders status)
	tokens int    // Fed-Tokens; -1 when absent
	data   []byte
}

// decodeMessage reads the headers a third-party client keys on.
func decodeMessage(m *nats.Msg, at time.Time) message {
	out := message{at: at, seq: -1, tokens: -1, data: m.Data}
	h := m.Header
	if h == nil {
		return out
	}
	out.node = h.Get(wire.HdrNode)
	out.status = h.Get(wire.HdrStatus)
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
}

// expectation is what a correct answer looks like: token i of the prompt's
// answer and each node's answer length.
type expectation struct {
	tokens     [][]byte       // token i of the answer, as the synthetic backend emits it
	nodeTokens map[string]int // answer length per node id
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
	var finals []message
	var chunks []message
	after := 0
	for _, m := range msgs {
		switch {
		case m.final():
			finals = append(finals, m)
		case len(finals) > 0:
			after++
		default:
			chunks = append(chunks, m)
		}
	}
	if len(finals) == 0 {
		return Verdict{Class: ClassSilence, Detail: fmt.Sprintf("no final; %d chunks", len(chunks))}
	}
	f := finals[0]
	v := Verdict{Node: f.node}
	if len(finals) > 1 {
		v.Class = ClassDouble
		v.Detail = fmt.Sprintf("%d finals:", len(finals))
		for _, g := range finals {
			v.Detail += fmt.Sprintf(" %s/%s/%d", nodeName(g.node), g.status, g.code)
		}
		return v
	}
	// Sequence: chunks carry 0..k-1 once each, the final carries k.
	seen := make(map[int]bool, len(chunks))
	for _, c := range chunks {
		if c.seq < 0 {
			return Verdict{Class: ClassGap, Node: f.node, Detail: "chunk without Fed-Seq"}
		}
		if seen[c.seq] {
			return Verdict{Class: ClassGap, Node: f.node, Detail: fmt.Sprintf("Fed-Seq %d twice", c.seq)}
		}
		seen[c.seq] = true
	}
	k := len(chunks)
	for i := range k {
		if !seen[i] {
			return Verdict{Class: ClassGap, Node: f.node, Detail: fmt.Sprintf("Fed-Seq %d missing of %d chunks", i, k)}
		}
	}
	if f.seq != k {
		return Verdict{Class: ClassGap, Node: f.node, Detail: fmt.Sprintf("final Fed-Seq %d after %d chunks", f.seq, k)}
	}
	if f.status == wire.StatusError {
		v.Class, v.Code = ClassError, f.code
		v.Detail = fmt.Sprintf("error %d from %s after %d chunks", f.code, nodeName(f.node), k)
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
	if after > 0 {
		return Verdict{Class: ClassAfter, Node: f.node, Detail: fmt.Sprintf("%d messages after the final", after)}
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
