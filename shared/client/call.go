package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// ReplayTimeout bounds one replay request (fed.node.<id>.replay) for a
// gap in a stream, and then the wait for the replayed messages to fill
// it; what is left of the request's deadline bounds both too.
const ReplayTimeout = 500 * time.Millisecond

// MaxReplays is how many replay requests one request may make.
const MaxReplays = 3

// StallAfter is how long a stream that has chunks may hear nothing before
// the reader asks its node for the next Fed-Seq (DESIGN §3.6).
const StallAfter = 2 * time.Second

// ReplayRetryPause is how long a client waits before asking again for a
// replay nobody answered (ReplayUnanswered); such tries are not counted in
// MaxReplays, and go on for ReplayPatience from the first (a server
// failover's reconnect takes about 2 s), then the gap is an error.
const (
	ReplayRetryPause = 250 * time.Millisecond
	ReplayPatience   = 3 * time.Second
)

// ReplayUnanswered reports whether a replay request failed for want of an
// answer (no responders, a timeout) rather than by the node's refusal: the
// node may be reconnecting, and asking again may fill the gap.
func ReplayUnanswered(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, context.DeadlineExceeded)
}

// SilentAfter is how long a request may hear nothing at all (no chunk, no
// final) before the reader asks who holds it (fed.held.<id>, DESIGN
// §3.8); HeldWait how long it waits for an answer, and MaxResends how
// many times it sends the request again when none came.
const (
	SilentAfter = 2 * time.Second
	HeldWait    = 500 * time.Millisecond
	MaxResends  = 2
)

// MaxContinues is how many continuations (DESIGN §4 step 9) one stream
// may send after its nodes were lost.
const MaxContinues = 2

// call is one request's state on the shared reply subscription. After the
// request ends for the caller the Client keeps the call (without its body)
// among the recently finished ones, so a late message is told apart from
// garbage: push then drops, counts and reports it.
type call struct {
	c          *Client
	token      string
	id         string // request id
	cancelKey  string // Fed-Cancel-Key of the request
	capability string
	tenant     string
	deadline   time.Time
	// bodyBlob is the request's body in fed_blobs ("" when inline):
	// deleted when the call closes, so a continuation can still send it.
	bodyBlob string
	// timer fires at the deadline. It is made once, on the reader's first
	// wait, and used only by the reader: a timer per chunk cost a fifth of
	// a stream's decode rate. An unstopped timer is collected (Go ≥ 1.23).
	timer *time.Timer
	// stall fires when a started stream has heard nothing for StallAfter
	// (reader only; made on the first wait that needs it).
	stall *time.Timer
	// nextSeq is the Fed-Seq the reader expects next (reader only).
	nextSeq int
	// Replay of a gap (reader only): held are the kept node's messages
	// after a gap, by Fed-Seq; replays counts the replay requests made;
	// askedTo is the last Fed-Seq of the latest replay asked for (-1: none)
	// and fillBy when its messages must have filled the gap.
	held    []heldMsg
	replays int
	askedTo int
	// unanswered: when the first replay request nobody answered failed
	// (zero: none); such tries go on for ReplayPatience
	unanswered time.Time
	fillBy     time.Time
	// req is the request as published (set before the call is shared):
	// sent again when nobody holds it, or continued when its stream's node
	// was lost. Continuation (reader only): resumable, a stream without
	// Fed-No-Resume; text the chunks read so far, joined; continues how
	// many continuations were sent (under mu: push reads it).
	req       *nats.Msg
	stream    bool
	resumable bool
	text      []byte
	continues int
	// askAt is when a request that has heard nothing asks who holds it;
	// resends counts the times it was sent again for it (§3.8; reader
	// only).
	askAt   time.Time
	resends int
	// timerAt is when timer is set to fire (reader only).
	timerAt time.Time

	mu     sync.Mutex
	queue  []*nats.Msg
	notify chan struct{} // cap 1: "queue grew"
	node   string        // the kept node: the first that answered, or the one that took over from it
	// heard: a message of this request was queued (any: a chunk, a final)
	heard bool
	// lost are the nodes another node took over from (Fed-Takeover) or a
	// router's Fed-Lost-Node final replaced: their messages are late.
	lost map[string]bool
	// resumed: a takeover node's message was accepted, or a continuation
	// sent (counted once).
	resumed bool
	// continuing: a router's Fed-Lost-Node final was queued without ending
	// the request, for the reader to send a continuation (or end it).
	continuing bool
	// dupes are the second nodes already reported (one duplicate outcome each).
	dupes   map[string]bool
	failure error
	// ended: the request has its end for the caller (a final is queued or
	// read, the reader failed, or the caller gave up); every message after
	// it is late. byCaller: it ended by the caller's deadline or cancel.
	ended, byCaller bool
	// over: the reader has its end (a final or an error read, or the call
	// closed); a replayed message (Fed-Replay) is still taken before that,
	// even after the final was queued (it may fill a gap before the final).
	over bool
	// closed: unregistered from pending, kept in the finished set.
	closed bool
	// cancelled: fed.cancel.<id> went out to every node; cancelledNodes:
	// targeted cancels already sent for late chunks.
	cancelled      bool
	cancelledNodes map[string]bool
}

func newCall(c *Client, token string, r *Request, deadline time.Time) *call {
	return &call{c: c, token: token, id: r.RequestID, capability: r.Capability, tenant: r.Tenant,
		deadline: deadline, notify: make(chan struct{}, 1), askedTo: -1}
}

// heldMsg is a message held after a gap until the replay fills the gap.
type heldMsg struct {
	seq int
	m   *nats.Msg
}

// isReplay reports whether m is a node's message sent again on a replay request.
func isReplay(m *nats.Msg) bool { return m.Header != nil && m.Header.Get(wire.HdrReplay) == "true" }

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
//
// A replayed message (Fed-Replay: true) is queued only from the kept node
// and only while the reader has not its end; otherwise it is dropped
// silently (the Client asked for it: it is neither late nor a duplicate).
func (cl *call) push(m *nats.Msg) {
	node := m.Header.Get(wire.HdrNode)
	final := isFinal(m)
	cl.mu.Lock()
	if isReplay(m) {
		keep := !cl.over && node != "" && node == cl.node
		if keep {
			cl.queue = append(cl.queue, m)
		}
		cl.mu.Unlock()
		if keep {
			cl.wake()
		}
		return
	}
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
		cl.c.drop(cl, d, cancel, m)
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
		cl.c.drop(cl, d, cancel, m)
		return
	}
	cl.queue = append(cl.queue, m)
	cl.heard = true
	switch {
	case replaces && cl.mayContinue():
		// The reader may continue the stream on another node: until it
		// decides, the request stays open, following no node.
		cl.node, cl.continuing = "", true
	case final:
		cl.ended = true
	}
	cl.mu.Unlock()
	cl.wake()
}

// mayContinue reports whether a lost stream may be continued. cl.mu is held.
func (cl *call) mayContinue() bool {
	return cl.resumable && cl.continues < MaxContinues && time.Now().Before(cl.deadline)
}

// wake tells the reader the queue or the failure changed; never blocks.
func (cl *call) wake() {
	select {
	case cl.notify <- struct{}{}:
	default:
	}
}

// takeOver applies Fed-Takeover and Fed-Lost-Node to the kept node before
// m is filtered; it reports whether m is a router's final that replaces the
// kept node's (Fed-Lost-Node). cl.mu is held; the request has not ended.
func (cl *call) takeOver(m *nats.Msg, node string, final bool) bool {
	// Both headers list every node the request was lost on (oldest first):
	// after a second loss the client may still keep the first of them.
	if node == "" {
		lost := m.Header.Get(wire.HdrLostNode)
		if !final || lost == "" || (cl.node != "" && !wire.NamesLost(lost, cl.node)) {
			return false
		}
		wire.LostList(lost, cl.markLost)
		return true
	}
	from := m.Header.Get(wire.HdrTakeover)
	if from == "" || node == cl.node || cl.lost[node] || (cl.node != "" && !wire.NamesLost(from, cl.node)) {
		return false
	}
	wire.LostList(from, cl.markLost)
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
	cl.lost[strings.Clone(node)] = true // kept past m (see close)
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
	cl.cancelledNodes[strings.Clone(node)] = true
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
	cl.dupes[strings.Clone(node)] = true
	return true
}

func (cl *call) fail(err error) {
	cl.mu.Lock()
	if cl.failure == nil {
		cl.failure = err
	}
	cl.mu.Unlock()
	cl.wake()
}

// end marks the request ended for the caller; byCaller: by its deadline or
// cancel rather than by a final.
func (cl *call) end(byCaller bool) {
	cl.mu.Lock()
	if !cl.ended {
		cl.ended, cl.byCaller = true, byCaller
	}
	cl.over = true
	cl.mu.Unlock()
}

// cancel publishes fed.cancel.<id> for every node, once per call.
func (cl *call) cancel() {
	cl.mu.Lock()
	done := cl.cancelled
	cl.cancelled = true
	cl.mu.Unlock()
	if !done {
		_ = cl.c.cancelWith(cl.id, cl.cancelKey, "")
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
	cl.closed, cl.over = true, true
	if !cl.ended { // the caller stopped reading before the end
		cl.ended, cl.byCaller = true, true
	}
	left := cl.queue
	cl.queue = nil
	// The finished ring keeps the call only to tell late messages, for
	// RememberFinished more calls: keep nothing else of the request (its
	// body and headers, the text read, held messages), and not the kept
	// node's name as sliced from its message, which pins that message's
	// whole header block (nats.go slices every value from one string). A
	// read after close fails at once instead of waiting out the deadline.
	cl.node = strings.Clone(cl.node)
	cl.req, cl.text, cl.held = nil, nil, nil
	if cl.failure == nil {
		cl.failure = ErrCallClosed
	}
	cl.mu.Unlock()
	if cl.timer != nil { // the call is remembered a while: free the runtime timer now
		cl.timer.Stop()
		cl.timer = nil
	}
	if cl.stall != nil {
		cl.stall.Stop()
		cl.stall = nil
	}
	if cl.bodyBlob != "" { // the request has ended for the caller: no node needs the body any more
		cl.c.deleteSoon(cl.bodyBlob)
	}
	cl.c.retire(cl)
	for _, m := range left {
		cl.push(m)
	}
}

// item is one decoded message.
type item struct {
	final bool
	skip  bool // a chunk the caller already has (resent by a takeover node, or replayed)
	gap   bool // a node's message beyond the next expected Fed-Seq: held until a replay fills the gap
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
	if err == nil && cl.stream && it.err == nil {
		cl.text = append(cl.text, it.data...) // the answer so far: Stream's body, a continuation's text
	}
	if err != nil || it.final {
		cl.end(false)
	}
	return it, err
}

func (cl *call) wait(ctx context.Context) (item, error) {
	for {
		if m := cl.heldNext(); m != nil { // the gap before it is filled
			return cl.decodeCounted(m)
		}
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
			switch {
			case err != nil:
				return it, err
			case it.skip: // a takeover node's resent chunk, or a replayed one the caller has
				continue
			case it.gap:
				cl.hold(it.seq, m)
				continue
			}
			if it.final && it.err != nil && cl.continueLost() {
				continue
			}
			if isReplay(m) {
				cl.c.replayed.Add(1)
			}
			return it, nil
		}
		heard := cl.heard
		cl.mu.Unlock()
		// A gap: ask for a replay (or wait for the one asked); a timer for
		// the fill only then, so a stream without gaps has one timer.
		var fill *time.Timer
		var filled <-chan time.Time
		if len(cl.held) > 0 {
			by, err := cl.recoverGap(ctx)
			if err != nil {
				return item{}, err
			}
			fill = time.NewTimer(time.Until(by))
			filled = fill.C
		}
		// One timer: the deadline, or sooner to ask who holds a request
		// that has heard nothing (§3.8); moved only when that changes.
		if cl.timer == nil {
			cl.askAt = time.Now().Add(SilentAfter)
			cl.timerAt = cl.wakeAt(heard)
			cl.timer = time.NewTimer(time.Until(cl.timerAt))
		} else if at := cl.wakeAt(heard); !at.Equal(cl.timerAt) {
			cl.timerAt = at
			cl.timer.Reset(time.Until(at))
		}
		// A stream with chunks and no gap that hears nothing for
		// StallAfter asks its node for the next Fed-Seq: a lost final
		// shows no gap. One timer, reset per wait (reader only).
		var stalled <-chan time.Time
		if cl.stream && cl.nextSeq > 0 && fill == nil {
			if cl.stall == nil {
				cl.stall = time.NewTimer(StallAfter)
			} else {
				cl.stall.Reset(StallAfter)
			}
			stalled = cl.stall.C
		}
		var err error
		select {
		case <-cl.notify:
		case <-stalled:
			cl.probeStall(ctx)
		case <-filled: // recoverGap decides on the next round
		case <-cl.timer.C:
			if !time.Now().Before(cl.deadline) {
				err = cl.giveUp(context.DeadlineExceeded)
				break
			}
			// A request that has heard nothing at all for SilentAfter
			// asks who holds it (§3.8): a router killed with it in hand
			// leaves nobody to answer.
			if !heard && cl.resends < MaxResends {
				cl.askHeld(ctx)
				cl.askAt = time.Now().Add(SilentAfter)
			}
			cl.timerAt = cl.wakeAt(cl.heardYet())
			cl.timer.Reset(time.Until(cl.timerAt))
		case <-ctx.Done():
			err = cl.giveUp(ctx.Err())
		}
		if fill != nil {
			fill.Stop()
		}
		if err != nil {
			return item{}, err
		}
	}
}

// wakeAt is when the reader's timer fires: the deadline, or sooner to
// ask who holds a request that has heard nothing.
func (cl *call) wakeAt(heard bool) time.Time {
	if !heard && cl.resends < MaxResends && cl.askAt.Before(cl.deadline) {
		return cl.askAt
	}
	return cl.deadline
}

// heardYet reports whether a message of the request was queued.
func (cl *call) heardYet() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.heard
}

// askHeld asks fed.held.<id> whether a router or node holds the request
// (DESIGN §3.8) and, when none answers within HeldWait and nothing was
// heard meanwhile, sends the request again: same id, reply subject and
// cancel key, Fed-Timeout-Ms what is left. A held answer, or trouble on
// the connection, leaves it waiting: it asks again after the next
// SilentAfter. Two answering nodes are sorted out as ever (§3.3).
func (cl *call) askHeld(ctx context.Context) {
	wait := min(HeldWait, time.Until(cl.deadline))
	if wait <= 0 {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_, err := cl.c.nc.RequestWithContext(hctx, cl.c.subj.Held(cl.id), nil)
	if err == nil || ctx.Err() != nil || !ReplayUnanswered(err) {
		return
	}
	cl.mu.Lock()
	over := cl.heard || cl.ended
	cl.mu.Unlock()
	if over {
		return
	}
	if m := cl.again(); m != nil && cl.c.nc.PublishMsg(m) == nil {
		cl.resends++
		cl.c.resent.Add(1)
	}
}

// again is the request as published, with Fed-Timeout-Ms what is left of
// its deadline and room for two more headers; nil when nothing is left or
// it would not fit the connection's max_payload.
func (cl *call) again() *nats.Msg {
	left := time.Until(cl.deadline)
	if left <= 0 {
		return nil
	}
	h := make(nats.Header, len(cl.req.Header)+2)
	for k, v := range cl.req.Header {
		h[k] = v
	}
	h.Set(wire.HdrTimeoutMs, strconv.FormatInt(max(left.Milliseconds(), 1), 10))
	m := &nats.Msg{Subject: cl.req.Subject, Reply: cl.req.Reply, Header: h, Data: cl.req.Data}
	if limit := cl.c.nc.MaxPayload(); limit > 0 && msgSize(h, m.Data) > limit {
		return nil
	}
	return m
}

// continueLost sends a continuation of a stream whose node was lost (a
// router's Fed-Lost-Node final that push left open): the request again,
// same id and reply subject, with Fed-Continue-Seq (the chunks the caller
// has) and Fed-Continue-Text (their text), so a node that can continue an
// answer emits only what follows; with no chunk yet it is the plain request
// again. False (the final stands) when push ended the request, the deadline
// passed, or the continuation does not fit or cannot be sent.
func (cl *call) continueLost() bool {
	cl.mu.Lock()
	ok := cl.continuing
	cl.continuing = false
	cl.mu.Unlock()
	if !ok {
		return false
	}
	m := cl.again()
	if m == nil {
		return false
	}
	if cl.nextSeq > 0 {
		m.Header.Set(wire.HdrContinueSeq, strconv.Itoa(cl.nextSeq))
		m.Header.Set(wire.HdrContinueText, base64.StdEncoding.EncodeToString(cl.text))
		if limit := cl.c.nc.MaxPayload(); limit > 0 && msgSize(m.Header, m.Data) > limit {
			return false
		}
	}
	if cl.c.nc.PublishMsg(m) != nil {
		return false
	}
	cl.mu.Lock()
	cl.continues++ // push reads it (mayContinue) under cl.mu
	if !cl.resumed {
		cl.resumed = true
		cl.c.resumed.Add(1)
	}
	cl.mu.Unlock()
	return true
}

// decodeCounted decodes a held message whose turn has come.
func (cl *call) decodeCounted(m *nats.Msg) (item, error) {
	it, err := cl.decode(m)
	if err == nil && isReplay(m) {
		cl.c.replayed.Add(1)
	}
	return it, err
}

// hold keeps a message that came after a gap, in Fed-Seq order; a second
// message with the same Fed-Seq is dropped (reader only).
func (cl *call) hold(seq int, m *nats.Msg) {
	i, found := slices.BinarySearchFunc(cl.held, seq, func(h heldMsg, s int) int { return h.seq - s })
	if !found {
		cl.held = slices.Insert(cl.held, i, heldMsg{seq: seq, m: m})
	}
}

// heldNext returns the held message with the next expected Fed-Seq, if
// the gap before it is filled. Held messages of a node that is no longer
// the kept one (another took over from it) are forgotten.
func (cl *call) heldNext() *nats.Msg {
	if len(cl.held) == 0 {
		return nil
	}
	kept := cl.firstNode()
	cl.held = slices.DeleteFunc(cl.held, func(h heldMsg) bool { return h.m.Header.Get(wire.HdrNode) != kept })
	if len(cl.held) == 0 || cl.held[0].seq != cl.nextSeq {
		return nil
	}
	m := cl.held[0].m
	cl.held = slices.Delete(cl.held, 0, 1)
	return m
}

// recoverGap asks the node of the first held message to replay the
// missing Fed-Seqs, once per gap and at most MaxReplays times per request,
// and returns when the replayed messages must have filled it. A replay
// that fails, or does not fill the gap in time, ends the request in the
// error the SDK has always given for a gap.
func (cl *call) recoverGap(ctx context.Context) (time.Time, error) {
	from, to := cl.nextSeq, cl.held[0].seq-1
	node := cl.held[0].m.Header.Get(wire.HdrNode)
	if from <= cl.askedTo { // this gap was asked for already
		if time.Now().Before(cl.fillBy) {
			return cl.fillBy, nil
		}
		return time.Time{}, cl.gapError(node, errors.New("the replayed messages did not fill the gap within "+ReplayTimeout.String()))
	}
	if cl.replays >= MaxReplays {
		return time.Time{}, cl.gapError(node, fmt.Errorf("%d replays asked for already, the most per request", cl.replays))
	}
	d := min(ReplayTimeout, time.Until(cl.deadline))
	if d <= 0 {
		return time.Time{}, cl.giveUp(context.DeadlineExceeded)
	}
	cl.replays++
	if err := cl.askReplay(ctx, node, from, to, d); err != nil {
		if ctx.Err() != nil {
			return time.Time{}, cl.giveUp(ctx.Err())
		}
		if ReplayUnanswered(err) {
			if cl.unanswered.IsZero() {
				cl.unanswered = time.Now()
			}
			if time.Since(cl.unanswered) < ReplayPatience {
				// The node did not hear or answer (it or we reconnecting
				// after a server failover; its buffer keeps the stream
				// 30 s): ask again after a pause, not counted.
				cl.replays--
				return time.Now().Add(min(ReplayRetryPause, max(time.Until(cl.deadline), 0))), nil
			}
		}
		return time.Time{}, cl.gapError(node, err)
	}
	cl.askedTo = to
	cl.fillBy = time.Now().Add(min(ReplayTimeout, max(time.Until(cl.deadline), 0)))
	return cl.fillBy, nil
}

// probeStall asks the kept node of a stream that went quiet for the
// Fed-Seq the reader expects next. A node that sent it (its final, lost
// with a server) replays it; one still working answers 404 and the reader
// goes on waiting; no answer is no conclusion either. Not counted in
// MaxReplays: at most one per StallAfter, bounded by the deadline.
func (cl *call) probeStall(ctx context.Context) {
	cl.mu.Lock()
	node := cl.node
	cl.mu.Unlock()
	d := min(ReplayTimeout, time.Until(cl.deadline))
	if node == "" || d <= 0 {
		return
	}
	if cl.askReplay(ctx, node, cl.nextSeq, cl.nextSeq, d) == nil {
		cl.c.stallProbes.Add(1)
	}
}

// askReplay asks node for request's messages from … to (inclusive) on
// fed.node.<node>.replay and waits up to d for its answer.
func (cl *call) askReplay(ctx context.Context, node string, from, to int, d time.Duration) error {
	if err := wire.ValidateID("node_id", node); err != nil {
		return fmt.Errorf("request %s: cannot ask for a replay: %w", cl.id, err)
	}
	body, err := json.Marshal(api.ReplayRequest{RequestID: cl.id, FromSeq: from, ToSeq: to})
	if err != nil {
		return fmt.Errorf("request %s: replay request: %w", cl.id, err)
	}
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := cl.c.nc.RequestWithContext(rctx, cl.c.subj.NodeReplay(node), body)
	if err != nil {
		return fmt.Errorf("node %s, request %s, Fed-Seq %d…%d: %w", node, cl.id, from, to, err)
	}
	if werr := wire.ErrorFromHeader(resp.Header); werr != nil {
		return fmt.Errorf("node %s, request %s, Fed-Seq %d…%d: %w", node, cl.id, from, to, werr)
	}
	var r api.ReplayResponse
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("node %s, request %s: bad replay answer: %w", node, cl.id, err)
	}
	if want := to - from + 1; r.Sent < want {
		return fmt.Errorf("node %s, request %s: replayed %d of the %d messages Fed-Seq %d…%d", node, cl.id, r.Sent, want, from, to)
	}
	return nil
}

// gapError ends the request for a gap the replay did not fill: the first
// held message is the one that showed the gap; the others are late.
func (cl *call) gapError(node string, cause error) error {
	err := &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: node,
		Description: fmt.Sprintf("stream lost messages: expected Fed-Seq %d, got %d; replay failed: %v", cl.nextSeq, cl.held[0].seq, cause)}
	rest := cl.held[1:]
	cl.held = nil
	cl.end(false)
	for _, h := range rest {
		cl.push(h.m)
	}
	return err
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
		// A replayed message the caller has already is skipped; one
		// beyond the next expected Fed-Seq (a gap) is held for a replay.
		if it.node != "" && seq >= 0 && seq < cl.nextSeq && isReplay(m) {
			it.skip = true
			return it, nil
		}
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
		} else if it.node != "" && seq > cl.nextSeq {
			it.gap, it.seq = true, seq
			return it, nil
		} else if it.node != "" && seq != cl.nextSeq {
			return it, &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: it.node,
				Description: "stream lost messages: expected Fed-Seq " + strconv.Itoa(cl.nextSeq) + ", got " + s}
		} else if it.node != "" { // a router's message (Fed-Seq 0) is no chunk of the answer
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
	r.LatencyMs = headerFloat(m.hdr, wire.HdrLatencyMs)
	r.TTFTMs = headerFloat(m.hdr, wire.HdrTTFTMs)
	return r
}

// headerFloat is a header's number, 0 when absent or not a number (an
// absent header is not parsed: strconv's error would allocate per call).
func headerFloat(h nats.Header, name string) float64 {
	v := h.Get(name)
	if v == "" {
		return 0
	}
	f, _ := strconv.ParseFloat(v, 64)
	return f
}
