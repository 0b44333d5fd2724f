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

// call is one request's state on the shared reply subscription. After the
// request ends for the caller the Client keeps the call (without its body)
// among the recently finished ones, so a late message is told apart from
// garbage: push then drops, counts and reports it.
type call struct {
	c          *Client
	token      string
	id         string // request id
	capability string
	tenant     string
	deadline   time.Time
	// timer fires at the deadline. It is made once, on the reader's first
	// wait, and used only by the reader: a timer per chunk cost a fifth of
	// a stream's decode rate. An unstopped timer is collected (Go ≥ 1.23).
	timer *time.Timer
	// nextSeq is the Fed-Seq the reader expects next (reader only).
	nextSeq int

	mu     sync.Mutex
	queue  []*nats.Msg
	notify chan struct{} // cap 1: "queue grew"
	node   string        // the kept node: the first that answered, or the one that took over from it
	// lost are the nodes another node took over from (Fed-Takeover) or a
	// router's Fed-Lost-Node final replaced: their messages are late.
	lost map[string]bool
	// resumed: a takeover node's message was accepted (counted once).
	resumed bool
	// dupes are the second nodes already reported (one duplicate outcome each).
	dupes   map[string]bool
	failure error
	// ended: the request has its end for the caller (a final is queued or
	// read, the reader failed, or the caller gave up); every message after
	// it is late. byCaller: it ended by the caller's deadline or cancel.
	ended, byCaller bool
	// closed: unregistered from pending, kept in the finished set.
	closed bool
	// cancelled: fed.cancel.<id> went out to every node; cancelledNodes:
	// targeted cancels already sent for late chunks.
	cancelled      bool
	cancelledNodes map[string]bool
}

func newCall(c *Client, token string, r *Request, deadline time.Time) *call {
	return &call{c: c, token: token, id: r.RequestID, capability: r.Capability, tenant: r.Tenant,
		deadline: deadline, notify: make(chan struct{}, 1)}
}

// isFinal reports whether m ends its request: Fed-Status done or error, an
// error code, or a no-responders status (what decode treats as final).
func isFinal(m *nats.Msg) bool {
	return wire.IsFinal(m) || (m.Header != nil && m.Header.Get(wire.HdrServiceErrorCode) != "")
}

// push runs on the subscription goroutine (and, for what a closing call
// had not read, on the reader's): filter, queue, wake the reader.
//
// Takeover (DESIGN §4): a node's message with Fed-Takeover naming the kept
// node (or any, when none is kept yet) makes that node the kept one; the
// reader skips its resent chunks (Fed-Seq below the next expected). A
// router's final with Fed-Lost-Node naming the kept node (or any, when none
// is kept) is the request's final. Either way the replaced node's later
// messages are late.
func (cl *call) push(m *nats.Msg) {
	node := m.Header.Get(wire.HdrNode)
	final := isFinal(m)
	cl.mu.Lock()
	replaces := !cl.ended && cl.takeOver(m, node, final)
	// A router's error after a node already took the request is late too: the
	// node's answer wins (its accept was late, not lost), unless the error
	// says that node was lost. Whatever a lost node still sends after another
	// node took over from it is late as well.
	late := cl.ended || (node == "" && cl.node != "" && !replaces) || (node != "" && node != cl.node && cl.lost[node])
	switch {
	case late:
		d := Dropped{RequestID: cl.id, Node: node, Final: final, Late: true, EndedByCaller: cl.ended && cl.byCaller}
		d.Duplicate = cl.node != "" && node != "" && node != cl.node && !cl.lost[node] && cl.noteDuplicate(node)
		// A node still streaming an answer nobody reads is told to stop, once;
		// the cancel names it (Fed-Node), and the caller has its end already
		// (or another node took over), so even a node that ignores the name
		// cancels nothing anyone needs.
		cancel := !final && node != "" && !cl.cancelled && cl.firstCancel(node)
		cl.mu.Unlock()
		cl.c.drop(cl, d, cancel)
		return
	case node != "" && cl.node == "":
		cl.node = node
	case node != "" && node != cl.node:
		// A second node answering while the kept one still streams: its
		// first message reports the duplicate and withdraws its attempt
		// (a cancel naming it stops only that node, §3.4).
		d := Dropped{RequestID: cl.id, Node: node, Final: final, Duplicate: cl.noteDuplicate(node)}
		cancel := !final && cl.firstCancel(node)
		cl.mu.Unlock()
		cl.c.drop(cl, d, cancel)
		return
	}
	cl.queue = append(cl.queue, m)
	if final {
		cl.ended = true
	}
	cl.mu.Unlock()
	select {
	case cl.notify <- struct{}{}:
	default:
	}
}

// takeOver applies Fed-Takeover and Fed-Lost-Node to the kept node before
// m is filtered; it reports whether m is a router's final that replaces the
// kept node's (Fed-Lost-Node). cl.mu is held; the request has not ended.
func (cl *call) takeOver(m *nats.Msg, node string, final bool) bool {
	if node == "" {
		lost := m.Header.Get(wire.HdrLostNode)
		if !final || lost == "" || (cl.node != "" && lost != cl.node) {
			return false
		}
		cl.markLost(lost)
		return true
	}
	from := m.Header.Get(wire.HdrTakeover)
	if from == "" || node == cl.node || cl.lost[node] || (cl.node != "" && from != cl.node) {
		return false
	}
	cl.markLost(from)
	cl.node = node
	if !cl.resumed {
		cl.resumed = true
		cl.c.resumed.Add(1)
	}
	return false
}

// markLost records node as replaced. cl.mu is held.
func (cl *call) markLost(node string) {
	if cl.lost == nil {
		cl.lost = map[string]bool{}
	}
	cl.lost[node] = true
}

// firstCancel records that node is told to stop; true the first time.
// cl.mu is held.
func (cl *call) firstCancel(node string) bool {
	if cl.cancelledNodes[node] {
		return false
	}
	if cl.cancelledNodes == nil {
		cl.cancelledNodes = map[string]bool{}
	}
	cl.cancelledNodes[node] = true
	return true
}

// noteDuplicate records node as a second node; true the first time.
// cl.mu is held.
func (cl *call) noteDuplicate(node string) bool {
	if cl.dupes[node] {
		return false
	}
	if cl.dupes == nil {
		cl.dupes = map[string]bool{}
	}
	cl.dupes[node] = true
	return true
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

// end marks the request ended for the caller; byCaller: by its deadline or
// cancel rather than by a final.
func (cl *call) end(byCaller bool) {
	cl.mu.Lock()
	if !cl.ended {
		cl.ended, cl.byCaller = true, byCaller
	}
	cl.mu.Unlock()
}

// cancel publishes fed.cancel.<id> for every node, once per call.
func (cl *call) cancel() {
	cl.mu.Lock()
	done := cl.cancelled
	cl.cancelled = true
	cl.mu.Unlock()
	if !done {
		_ = cl.c.Cancel(cl.id)
	}
}

// close unregisters the call (the Client remembers it among the recently
// finished); what it had queued and not read is dropped as late. It is
// idempotent.
func (cl *call) close() {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return
	}
	cl.closed = true
	if !cl.ended { // the caller stopped reading before the end
		cl.ended, cl.byCaller = true, true
	}
	left := cl.queue
	cl.queue = nil
	cl.mu.Unlock()
	if cl.timer != nil { // the call is remembered a while: free the runtime timer now
		cl.timer.Stop()
	}
	cl.c.retire(cl)
	for _, m := range left {
		cl.push(m)
	}
}

// item is one decoded message.
type item struct {
	final bool
	skip  bool // a chunk the caller already has (resent by a takeover node)
	err   *wire.Error
	seq   int
	node  string
	data  []byte
	hdr   nats.Header
}

// next waits for the next message, the deadline or ctx. On deadline or
// cancellation it cancels the request in the mesh. An error or a final item
// ends the request for the caller: whatever comes after is late.
func (cl *call) next(ctx context.Context) (item, error) {
	it, err := cl.wait(ctx)
	if err != nil || it.final {
		cl.end(false)
	}
	return it, err
}

func (cl *call) wait(ctx context.Context) (item, error) {
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
			it, err := cl.decode(m)
			if it.skip && err == nil { // a takeover node's resent chunk
				continue
			}
			return it, err
		}
		cl.mu.Unlock()
		if cl.timer == nil {
			cl.timer = time.NewTimer(time.Until(cl.deadline))
		}
		select {
		case <-cl.notify:
		case <-cl.timer.C:
			return item{}, cl.giveUp(context.DeadlineExceeded)
		case <-ctx.Done():
			return item{}, cl.giveUp(ctx.Err())
		}
	}
}

// giveUp ends the request by the caller's deadline or cancel (cause) and
// cancels it in the mesh; a deadline is a 504.
func (cl *call) giveUp(cause error) error {
	cl.end(true)
	cl.cancel()
	if errors.Is(cause, context.DeadlineExceeded) {
		return &wire.Error{Code: wire.CodeTimeout, Description: "no final answer before the deadline",
			RequestID: cl.id, Node: cl.firstNode()}
	}
	return cause
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
			Description: "no router is serving " + cl.c.subj.Infer(cl.capability), RequestID: cl.id}}, nil
	}
	if s := m.Header.Get(wire.HdrSeq); s != "" {
		seq, err := strconv.Atoi(s)
		if err != nil {
			return it, &wire.Error{Code: wire.CodeInternal, Description: "bad Fed-Seq " + strconv.Quote(s), RequestID: cl.id, Node: it.node}
		}
		// Router errors restart at 0 (they are the only message); node
		// messages must arrive 0, 1, 2, …, and the final's Fed-Seq is the
		// number of chunks before it: a gap means a lost message. A node
		// that took over (Fed-Takeover; push kept it only if it took over
		// from the kept node) streams from 0 again: what the caller has
		// already is skipped, its error final ends the request wherever it
		// comes, and its done must not come before the chunks the caller has.
		if it.node != "" && seq >= 0 && seq < cl.nextSeq && m.Header.Get(wire.HdrTakeover) != "" {
			switch {
			case !isFinal(m):
				it.skip = true
				return it, nil
			case m.Header.Get(wire.HdrStatus) == wire.StatusDone:
				return it, &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: it.node,
					Description: "node " + it.node + " took over from " + m.Header.Get(wire.HdrTakeover) + " and ended at Fed-Seq " + s +
						", before the " + strconv.Itoa(cl.nextSeq) + " chunks already received"}
			}
		} else if it.node != "" && seq != cl.nextSeq {
			return it, &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: it.node,
				Description: "stream lost messages: expected Fed-Seq " + strconv.Itoa(cl.nextSeq) + ", got " + s}
		} else {
			cl.nextSeq = seq + 1
		}
		it.seq = seq
	}
	if werr := wire.ErrorFromHeader(m.Header); werr != nil {
		if werr.RequestID == "" {
			werr.RequestID = cl.id
		}
		it.final, it.err = true, werr
		return it, nil
	}
	it.final = m.Header.Get(wire.HdrStatus) == wire.StatusDone
	return it, nil
}

func (cl *call) response(m item, body []byte) *Response {
	r := &Response{RequestID: cl.id, Node: m.node, Body: body, Header: m.hdr}
	r.Tokens, _ = strconv.Atoi(m.hdr.Get(wire.HdrTokens))
	r.LatencyMs, _ = strconv.ParseFloat(m.hdr.Get(wire.HdrLatencyMs), 64)
	r.TTFTMs, _ = strconv.ParseFloat(m.hdr.Get(wire.HdrTTFTMs), 64)
	return r
}
