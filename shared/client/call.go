package client

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// call is one request's state on the shared reply subscription.
type call struct {
	c        *Client
	token    string
	req      *Request
	deadline time.Time
	// timer fires at the deadline. It is made once, on the reader's first
	// wait, and used only by the reader: a timer per chunk cost a fifth of
	// a stream's decode rate. An unstopped timer is collected (Go ≥ 1.23).
	timer *time.Timer

	mu       sync.Mutex
	queue    []*nats.Msg
	notify   chan struct{} // cap 1: "queue grew"
	node     string        // the first node that answered; others are duplicates
	dupes    map[string]bool
	failure  error
	finished bool
	nextSeq  int
}

func newCall(c *Client, token string, r *Request, deadline time.Time) *call {
	return &call{c: c, token: token, req: r, deadline: deadline, notify: make(chan struct{}, 1)}
}

// push runs on the subscription goroutine: filter, queue, wake the reader.
func (cl *call) push(m *nats.Msg) {
	node := m.Header.Get(wire.HdrNode)
	cl.mu.Lock()
	if cl.finished {
		cl.mu.Unlock()
		return
	}
	switch {
	case node != "" && cl.node == "":
		cl.node = node
	case node != "" && node != cl.node:
		first := !cl.dupes[node]
		if cl.dupes == nil {
			cl.dupes = map[string]bool{}
		}
		cl.dupes[node] = true
		cl.mu.Unlock()
		if first {
			cl.c.reportDuplicate(cl, node)
		}
		return
	case node == "" && cl.node != "":
		// A router's error after a node already took the request: the node's
		// answer wins (its accept was late, not lost).
		cl.mu.Unlock()
		return
	}
	cl.queue = append(cl.queue, m)
	cl.mu.Unlock()
	select {
	case cl.notify <- struct{}{}:
	default:
	}
}

func (cl *call) fail(err error) {
	cl.mu.Lock()
	if cl.failure == nil {
		cl.failure = err
	}
	cl.mu.Unlock()
	select {
	case cl.notify <- struct{}{}:
	default:
	}
}

// close unregisters the call; later messages for it are dropped.
func (cl *call) close() {
	cl.mu.Lock()
	cl.finished = true
	cl.queue = nil
	cl.mu.Unlock()
	cl.c.forget(cl.token)
}

// item is one decoded message.
type item struct {
	final bool
	err   *wire.Error
	seq   int
	node  string
	data  []byte
	hdr   nats.Header
}

// next waits for the next message, the deadline or ctx. On deadline or
// cancellation it cancels the request in the mesh.
func (cl *call) next(ctx context.Context) (item, error) {
	for {
		cl.mu.Lock()
		if cl.failure != nil {
			err := cl.failure
			cl.mu.Unlock()
			return item{}, err
		}
		if len(cl.queue) > 0 {
			m := cl.queue[0]
			cl.queue[0] = nil
			cl.queue = cl.queue[1:]
			cl.mu.Unlock()
			return cl.decode(m)
		}
		cl.mu.Unlock()
		if cl.timer == nil {
			cl.timer = time.NewTimer(time.Until(cl.deadline))
		}
		select {
		case <-cl.notify:
		case <-cl.timer.C:
			_ = cl.c.Cancel(cl.req.RequestID)
			return item{}, &wire.Error{Code: wire.CodeTimeout, Description: "no final answer before the deadline",
				RequestID: cl.req.RequestID, Node: cl.firstNode()}
		case <-ctx.Done():
			_ = cl.c.Cancel(cl.req.RequestID)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return item{}, &wire.Error{Code: wire.CodeTimeout, Description: "no final answer before the deadline",
					RequestID: cl.req.RequestID, Node: cl.firstNode()}
			}
			return item{}, ctx.Err()
		}
	}
}

func (cl *call) firstNode() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.node
}

func (cl *call) decode(m *nats.Msg) (item, error) {
	it := item{node: m.Header.Get(wire.HdrNode), data: m.Data, hdr: m.Header}
	if wire.IsNoResponders(m) {
		return item{final: true, err: &wire.Error{Code: wire.CodeNoCapacity,
			Description: "no router is serving " + cl.c.subj.Infer(cl.req.Capability), RequestID: cl.req.RequestID}}, nil
	}
	if s := m.Header.Get(wire.HdrSeq); s != "" {
		seq, err := strconv.Atoi(s)
		if err != nil {
			return it, &wire.Error{Code: wire.CodeInternal, Description: "bad Fed-Seq " + strconv.Quote(s), RequestID: cl.req.RequestID, Node: it.node}
		}
		// Router errors restart at 0 (they are the only message); node
		// messages must arrive 0, 1, 2, …: a gap means a lost message.
		if it.node != "" && seq != cl.nextSeq {
			return it, &wire.Error{Code: wire.CodeInternal, RequestID: cl.req.RequestID, Node: it.node,
				Description: "stream lost messages: expected Fed-Seq " + strconv.Itoa(cl.nextSeq) + ", got " + s}
		}
		it.seq = seq
		cl.nextSeq = seq + 1
	}
	if werr := wire.ErrorFromHeader(m.Header); werr != nil {
		if werr.RequestID == "" {
			werr.RequestID = cl.req.RequestID
		}
		it.final, it.err = true, werr
		return it, nil
	}
	it.final = m.Header.Get(wire.HdrStatus) == wire.StatusDone
	return it, nil
}

func (cl *call) response(m item, body []byte) *Response {
	r := &Response{RequestID: cl.req.RequestID, Node: m.node, Body: body, Header: m.hdr}
	r.Tokens, _ = strconv.Atoi(m.hdr.Get(wire.HdrTokens))
	r.LatencyMs, _ = strconv.ParseFloat(m.hdr.Get(wire.HdrLatencyMs), 64)
	r.TTFTMs, _ = strconv.ParseFloat(m.hdr.Get(wire.HdrTTFTMs), 64)
	return r
}
