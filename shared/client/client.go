// Package client is fedmesh's Go SDK: it sends inference requests into the
// mesh and reads their answers. All requests of a Client share one wildcard
// reply subscription, so a request costs no subscription of its own.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("fedmesh client: closed")

// ErrCallClosed is returned by a read of a Stream after its Close.
var ErrCallClosed = errors.New("fedmesh client: request closed")

// Client sends requests on one NATS connection. It is safe for concurrent use.
type Client struct {
	nc     *nats.Conn
	subj   subject.Space
	prefix string // reply subject prefix, ends in '.'
	sub    *nats.Subscription

	mu      sync.Mutex
	pending map[string]*call
	// finished are the last RememberFinished calls that ended, by reply
	// token, oldest first in ring (next is the slot to overwrite).
	finished map[string]*call
	ring     []string
	next     int
	closed   bool

	// tenant is the default Request.Tenant; tenantSubjects puts a request's
	// tenant in its subject (WithTenant, WithTenantSubjects)
	tenant         string
	tenantSubjects bool

	onDrop     func(Dropped)
	duplicates atomic.Int64
	late       atomic.Int64
	resumed    atomic.Int64
	replayed   atomic.Int64
	// stallProbes: replays of a quiet stream's next Fed-Seq the node sent
	stallProbes atomic.Int64
	// resent: requests sent again because, silent for SilentAfter, nobody
	// held them (§3.8)
	resent atomic.Int64

	// Out-of-band bodies (blob.go): the body cap, fed_blobs (opened on
	// first use), the deletes of answer blobs nobody reads, and the blobs
	// that could not be deleted.
	maxBody   int64
	blobs     *blobs.Opener
	bg        *lifecycle.Group
	blobLeaks atomic.Int64
}

// RememberFinished is how many finished requests a Client remembers (by
// reply token, with the node it kept) to tell a late message from garbage.
const RememberFinished = 4096

// Option configures a Client.
type Option func(*Client)

// WithSubjects sets the subject namespace (default prefix "fed").
func WithSubjects(s subject.Space) Option { return func(c *Client) { c.subj = s } }

// WithTenant makes tenant every request's default tenant and publishes each
// request with a tenant on fed.infer.<capability>.<tenant> (as
// WithTenantSubjects), the secured form whose last token a credential pins
// (DESIGN §2, §13). Connect with nats.CustomInboxPrefix("_INBOX."+tenant)
// in secured mode: the client's inbox is the only one it may read.
func WithTenant(tenant string) Option {
	return func(c *Client) { c.tenant, c.tenantSubjects = tenant, true }
}

// WithTenantSubjects publishes each request that names a tenant on
// fed.infer.<capability>.<tenant> (the gateway, which names tenants from
// API keys); a tenant that is not an id is then refused with 400.
func WithTenantSubjects() Option { return func(c *Client) { c.tenantSubjects = true } }

// WithDropped has fn called for every message of a request the Client does
// not hand to the caller: late ones (after the request ended) and a second
// node's. fn runs on the Client's delivery path, possibly on two goroutines
// at once: it must be quick and must not block (count, log).
func WithDropped(fn func(Dropped)) Option { return func(c *Client) { c.onDrop = fn } }

// Dropped is one message the Client dropped (WithDropped).
type Dropped struct {
	RequestID string
	Node      string // the message's Fed-Node; "" for a router's message
	Final     bool   // a final message (done, error, no responders)
	// Late: the request had already ended for the caller (its final, the
	// caller's deadline or cancel, a broken stream), or a node had already
	// taken it and this is a router's error, or this node was lost and
	// another took over from it. Counted in LateMessages.
	Late bool
	// EndedByCaller: late, and the request had ended by the caller's
	// deadline or cancel rather than by a final (messages in flight then are
	// expected: the node's 499, the rest of a stream the caller left).
	EndedByCaller bool
	// Duplicate: the first message of a second node for this request (one
	// duplicate outcome published, counted in Duplicates). Other messages of
	// that node have Duplicate false.
	Duplicate bool
}

// New starts a Client on nc. Close it to drop its reply subscription.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	c := &Client{nc: nc, subj: subject.Default, pending: make(map[string]*call),
		finished: make(map[string]*call), ring: make([]string, RememberFinished),
		maxBody: blobs.DefaultMaxBytes, blobs: blobs.NewOpener(nc), bg: lifecycle.NewGroup()}
	for _, o := range opts {
		o(c)
	}
	c.prefix = nc.NewInbox() + "."
	sub, err := nc.Subscribe(c.prefix+"*", c.deliver)
	if err != nil {
		return nil, fmt.Errorf("fedmesh client: reply subscription: %w", err)
	}
	// Streams can be long and bursty; limits bound memory, not message count.
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("fedmesh client: pending limits: %w", err)
	}
	c.sub = sub
	return c, nil
}

// Close drops the reply subscription; requests in flight end with
// ErrClosed. It waits for the deletes of answer blobs nobody read.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	calls := c.pending
	c.pending = map[string]*call{}
	c.mu.Unlock()
	for _, cl := range calls {
		cl.fail(ErrClosed)
	}
	c.bg.Drain(blobDeleteGrace)
	// a closed connection has dropped the subscription already
	if err := c.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("fedmesh client: drop reply subscription: %w", err)
	}
	return nil
}

// Duplicates counts second nodes that answered a request whose first
// node's answer the Client kept (before or after that answer's final): one
// per request and node, each reported with a duplicate outcome on
// fed.outcome.<node>.
func (c *Client) Duplicates() int64 { return c.duplicates.Load() }

// LateMessages counts messages dropped because their request had already
// ended for the caller (after its one final, deadline or cancel), plus a
// router's error after a node had taken the request (unless it is the
// Fed-Lost-Node final for that node), plus a lost node's messages after
// another node took over from it. Messages for reply tokens the Client
// never issued, or forgot (more than RememberFinished requests ago), are
// garbage and not counted.
func (c *Client) LateMessages() int64 { return c.late.Load() }

// Resumed counts requests answered, in whole or from the middle of a
// stream, by a node that took over from a lost one (Fed-Takeover naming
// the node the Client kept, or any node before one answered). The chunks
// the caller already had, which that node sends again, are skipped: they
// are neither errors nor late.
func (c *Client) Resumed() int64 { return c.resumed.Load() }

// Replayed counts messages recovered by a replay: after a gap in a
// stream's Fed-Seq (a message lost, say in a server failover) the Client
// holds what came after it, asks the node on fed.node.<id>.replay for the
// missing Fed-Seqs (ReplayTimeout, at most MaxReplays per request) and
// delivers in order; each replayed message (Fed-Replay: true) that filled a
// gap counts once. A replayed message the caller already has is dropped
// silently. A gap the replay does not fill ends the request in a 500
// "stream lost messages".
func (c *Client) Replayed() int64 { return c.replayed.Load() }

// StallProbes counts streams that heard nothing for StallAfter after their
// first chunk and whose node, asked for the next Fed-Seq, sent it again
// (its final or a chunk lost with a server, which a gap cannot show when
// nothing follows it).
func (c *Client) StallProbes() int64 { return c.stallProbes.Load() }

// Resent counts requests sent again because the Client had heard nothing
// of them for SilentAfter and no router or node answered that it held
// them (DESIGN §3.8): a router killed with the request in hand.
func (c *Client) Resent() int64 { return c.resent.Load() }

// Request is one inference request. Empty fields take the defaults of
// DESIGN §3 (privacy internal, prefer GPU, cost tolerance 50, 30 s deadline).
//
// A body of any size up to the Client's cap (WithMaxBody, 64 MiB) is
// carried: one that does not fit a NATS message goes out of band through
// fed_blobs (DESIGN §3.7).
type Request struct {
	Capability string
	Body       []byte
	// BodyReader, instead of Body, streams the body: a large one is
	// uploaded a chunk at a time, never held whole. BodySize is its length
	// when known (0: unknown; then up to about one max_payload is read
	// first to tell whether it fits inline, and the cap is checked as it
	// is read). The Client reads it during Infer / InferStream only.
	BodyReader io.Reader
	BodySize   int64
	// Upload, instead of Body or BodyReader, is a body stored already
	// (Client.Upload); the request owns it from then on and deletes it
	// when it ends, or when it fails before it is sent.
	Upload        *Upload
	RequestID     string // assigned when empty
	Tenant        string
	Model         string
	Privacy       string // public, internal, confidential, restricted
	Regions       []string
	MaxLatencyMs  float64
	MinThroughput float64
	PreferGPU     *bool
	CostTolerance *int
	Region        string
	Session       string
	// Header holds extra headers, sent as they are.
	Header nats.Header
}

// Response is a finished request.
type Response struct {
	RequestID string
	Node      string
	Body      []byte // the whole output (for a stream: the chunks joined)
	Tokens    int
	LatencyMs float64 // as the node measured it
	TTFTMs    float64
	Header    nats.Header // of the final message
	// Size is the answer's length in bytes (also when InferTo wrote it
	// elsewhere and Body is nil).
	Size int64
}

// Chunk is one piece of a streamed answer.
type Chunk struct {
	Seq  int
	Node string
	Data []byte
}

// header builds a request's headers: r.Header as given, then the routing
// headers wire.Spec encodes (the router decodes them with wire.ParseSpec).
func (c *Client) header(r *Request, stream bool, timeout time.Duration) (nats.Header, error) {
	spec := wire.NewSpec()
	p, err := wire.ParsePrivacy(r.Privacy)
	if err != nil {
		return nil, &wire.Error{Code: wire.CodeBadRequest, Description: err.Error(), RequestID: r.RequestID}
	}
	spec.RequestID, spec.Tenant, spec.Model, spec.Privacy = r.RequestID, r.Tenant, r.Model, p
	spec.Regions, spec.MaxLatencyMs, spec.MinThroughput = r.Regions, r.MaxLatencyMs, r.MinThroughput
	if r.PreferGPU != nil {
		spec.PreferGPU = *r.PreferGPU
	}
	if r.CostTolerance != nil {
		spec.CostTolerance = *r.CostTolerance
	}
	spec.Region, spec.Session, spec.Stream = r.Region, r.Session, stream
	spec.Timeout = max(timeout, time.Millisecond)
	h := make(nats.Header, len(r.Header)+5)
	for k, v := range r.Header {
		h[k] = append([]string(nil), v...)
	}
	spec.Encode(h)
	// The SDK's own two in one values slice (see Spec.Encode).
	own := []string{"true", ""}
	h[blobs.HdrAccept] = own[0:1:1] // a large answer may come through fed_blobs
	if h.Get(wire.HdrCancelKey) == "" {
		own[1] = cancelKey() // the cancel secret: nobody else may stop it
		h[wire.HdrCancelKey] = own[1:2:2]
	}
	return h, nil
}

// cancelKey is a new cancel secret (or reply token): 128 random bits (nuid
// is guessable from one value, a secret must not be), base64url, a valid
// subject token.
func cancelKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// start registers a call and publishes the request.
func (c *Client) start(ctx context.Context, r *Request, stream bool) (*call, error) {
	// a stored body the request does not take (it failed first) is deleted
	defer r.Upload.Discard()
	if r.Capability == "" {
		return nil, wire.Errorf(wire.CodeBadRequest, "request has no capability")
	}
	if err := wire.ValidateCapability(r.Capability); err != nil {
		return nil, wire.Errorf(wire.CodeBadRequest, "%v", err)
	}
	if r.RequestID == "" {
		r.RequestID = nuid.Next()
	}
	if r.Tenant == "" {
		r.Tenant = c.tenant
	}
	subj := c.subj.Infer(r.Capability)
	if c.tenantSubjects && r.Tenant != "" {
		if err := wire.ValidateID("tenant", r.Tenant); err != nil {
			return nil, &wire.Error{Code: wire.CodeBadRequest, RequestID: r.RequestID,
				Description: fmt.Sprintf("tenant in the request subject: %v", err)}
		}
		subj = c.subj.InferAs(r.Capability, r.Tenant)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(wire.DefaultTimeout)
	}
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return nil, &wire.Error{Code: wire.CodeTimeout, Description: "deadline passed before the request was sent", RequestID: r.RequestID}
	}
	hdr, err := c.header(r, stream, timeout)
	if err != nil {
		return nil, err
	}
	b, err := c.prepareBody(ctx, r, hdr, deadline)
	if err != nil {
		return nil, err
	}
	if limit := c.nc.MaxPayload(); limit > 0 { // 0: not connected yet, nats.go does not check either
		if size := msgSize(hdr, b.data); size > limit { // the headers alone are too large
			c.dropBlob(b.blob)
			return nil, tooLarge(r.RequestID, size, limit)
		}
	}
	// the reply token is random, not a nuid: whoever sees one reply subject
	// of this Client (the node serving one of its requests) could guess the
	// next nuid and answer the next requests first (DESIGN §16)
	token := cancelKey()
	cl := newCall(c, token, r, deadline)
	cl.cancelKey = hdr.Get(wire.HdrCancelKey)
	cl.bodyBlob = b.blob
	msg := &nats.Msg{
		Subject: subj,
		Reply:   c.prefix + token,
		Header:  hdr,
		Data:    b.data,
	}
	cl.stream = stream
	cl.req = msg // kept to send again: when nobody holds it (§3.8), or its stream's node was lost
	cl.resumable = stream && hdr.Get(wire.HdrNoResume) != "true"
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.dropBlob(b.blob)
		return nil, ErrClosed
	}
	c.pending[token] = cl
	c.mu.Unlock()
	if err := c.nc.PublishMsg(msg); err != nil {
		c.forget(token)
		c.dropBlob(b.blob)
		if errors.Is(err, nats.ErrMaxPayload) { // the limit changed under us (a reconnect)
			return nil, tooLarge(r.RequestID, msgSize(hdr, b.data), c.nc.MaxPayload())
		}
		return nil, fmt.Errorf("fedmesh client: publish request %s: %w", r.RequestID, err)
	}
	return cl, nil
}

// dropBlob deletes the body blob of a request that was never sent.
func (c *Client) dropBlob(name string) {
	if name != "" {
		c.deleteBlob(name)
	}
}

// msgSize is what NATS counts against max_payload for a message: its
// headers as nats.go encodes them ("NATS/1.0\r\n", "Key: value\r\n" per
// value with the value trimmed, "\r\n") plus the body. The subject and reply
// do not count.
func msgSize(h nats.Header, body []byte) int64 {
	n := len(body)
	if len(h) > 0 {
		n += len("NATS/1.0\r\n") + len("\r\n")
		for k, vs := range h {
			for _, v := range vs {
				n += len(k) + len(": ") + len(textproto.TrimString(v)) + len("\r\n")
			}
		}
	}
	return int64(n)
}

// tooLarge is the 413 of a request that does not fit one NATS message.
func tooLarge(requestID string, size, limit int64) *wire.Error {
	return &wire.Error{Code: wire.CodeTooLarge, RequestID: requestID, Description: fmt.Sprintf(
		"request of %d bytes (headers and body) does not fit the NATS max_payload of %d bytes", size, limit)}
}

func (c *Client) forget(token string) {
	c.mu.Lock()
	delete(c.pending, token)
	c.mu.Unlock()
}

// retire moves an ended call from pending to the finished ring, forgetting
// the oldest finished one when the ring is full.
func (c *Client) retire(cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[cl.token] != cl { // the Client was closed, or never registered it
		return
	}
	delete(c.pending, cl.token)
	if old := c.ring[c.next]; old != "" {
		delete(c.finished, old)
	}
	c.ring[c.next] = cl.token
	c.next = (c.next + 1) % len(c.ring)
	c.finished[cl.token] = cl
}

// deliver runs on the reply subscription's goroutine for every message. It
// never blocks: a call queues what it has not read yet, a finished call
// drops it as late; a token the Client does not know is garbage.
func (c *Client) deliver(m *nats.Msg) {
	token := subject.LastToken(m.Subject)
	c.mu.Lock()
	cl := c.pending[token]
	if cl == nil {
		cl = c.finished[token]
	}
	c.mu.Unlock()
	if cl != nil {
		cl.push(m)
	}
}

// drop counts and reports a message the caller does not get: late, a
// second node's (its first message publishes a duplicate outcome), and for
// a late chunk from a node the first time, a cancel naming that node.
func (c *Client) drop(cl *call, d Dropped, cancel bool, m *nats.Msg) {
	if d.Final {
		c.deleteLater(m) // an answer blob nobody will read
	}
	if d.Late {
		c.late.Add(1)
	}
	if d.Duplicate {
		c.reportDuplicate(cl, d.Node)
	}
	if cancel {
		_ = c.cancelWith(cl.id, cl.cancelKey, d.Node)
	}
	if c.onDrop != nil {
		c.onDrop(d)
	}
}

// Cancel asks the node serving requestID to stop. It is best-effort. For a
// request of this Client in flight it carries the request's cancel key (a
// node ignores a cancel without the right one, DESIGN §3.4); otherwise it
// can only stop a request that was sent without a key.
func (c *Client) Cancel(requestID string) error {
	key := ""
	c.mu.Lock()
	for _, cl := range c.pending {
		if cl.id == requestID {
			key = cl.cancelKey
			break
		}
	}
	c.mu.Unlock()
	return c.cancelWith(requestID, key, "")
}

// cancelWith publishes fed.cancel.<id> with the request's key or, for a
// targeted cancel, the node and the key's digest for it (wire.WithdrawKey:
// every node hears the cancel, and must not learn the key).
func (c *Client) cancelWith(requestID, key, node string) error {
	m := &nats.Msg{Subject: c.subj.Cancel(requestID), Header: nats.Header{}}
	if node != "" {
		m.Header.Set(wire.HdrNode, node)
		key = wire.WithdrawKey(key, node)
	}
	if key != "" {
		m.Header.Set(wire.HdrCancelKey, key)
	}
	return c.nc.PublishMsg(m)
}

func (c *Client) reportDuplicate(cl *call, node string) {
	c.duplicates.Add(1)
	ev := record.Outcome{Kind: record.OutcomeDuplicate, NodeID: node, RequestID: cl.id,
		Capability: cl.capability, Tenant: cl.tenant, Time: time.Now()}
	if b, err := json.Marshal(ev); err == nil {
		_ = c.nc.Publish(c.subj.ClientDuplicate(node), b)
	}
}

// Infer sends a request and returns the whole answer. A failed request gives
// a *wire.Error (errors.As) with the mesh's code: 503 no capacity, 504
// timeout, 403 privacy, …; a body over the cap a *BodyTooLargeError (413).
func (c *Client) Infer(ctx context.Context, r Request) (*Response, error) {
	cl, err := c.start(ctx, &r, false)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	var body []byte
	for {
		m, err := cl.next(ctx)
		if err != nil {
			return nil, err
		}
		if m.final {
			if m.err != nil {
				return nil, m.err
			}
			if _, ok, _ := blobs.AnswerRef(m.hdr); ok || body != nil {
				buf := bytes.NewBuffer(body)
				if _, err := c.answerTo(ctx, cl, m, buf); err != nil {
					return nil, err
				}
				body = buf.Bytes()
			} else {
				body = m.data // the usual whole answer: no copy
			}
			return cl.response(m, body), nil
		}
		body = append(body, m.data...)
	}
}

// InferTo is Infer writing the answer to w as it comes (chunks, or a large
// answer fetched from fed_blobs a chunk at a time) instead of holding it:
// the Response's Body is nil, its Size what was written. An error writing
// to w ends the request (cancelled in the mesh).
func (c *Client) InferTo(ctx context.Context, r Request, w io.Writer) (*Response, error) {
	cl, err := c.start(ctx, &r, false)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	var size int64
	for {
		m, err := cl.next(ctx)
		if err != nil {
			return nil, err
		}
		if m.final && m.err != nil {
			return nil, m.err
		}
		var n int64
		if m.final {
			n, err = c.answerTo(ctx, cl, m, w)
		} else {
			var k int
			k, err = w.Write(m.data)
			n = int64(k)
		}
		size += n
		if err != nil {
			cl.cancel()
			return nil, err
		}
		if m.final {
			resp := cl.response(m, nil)
			resp.Size = size
			return resp, nil
		}
	}
}

// InferAnswer is InferTo for a relay that must see the final message
// before the answer's first byte (the gateway sets HTTP headers from it):
// open gets the Response (Body nil; Size the answer's length as the final
// says it) once the final is in, and returns where the answer goes; its
// error ends the request. A large answer is then copied from fed_blobs a
// segment at a time. The Response returned has Size the bytes written. An
// error after open returned may come with part of the answer written.
func (c *Client) InferAnswer(ctx context.Context, r Request, open func(*Response) (io.Writer, error)) (*Response, error) {
	cl, err := c.start(ctx, &r, false)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	var held []byte // chunks before the final: none from today's nodes for a whole answer
	for {
		m, err := cl.next(ctx)
		if err != nil {
			return nil, err
		}
		if !m.final {
			held = append(held, m.data...)
			continue
		}
		if m.err != nil {
			return nil, m.err
		}
		resp := cl.response(m, nil)
		resp.Size = int64(len(held) + len(m.data))
		ref, blob, _ := blobs.AnswerRef(m.hdr)
		if blob {
			resp.Size = -1
			if ref.Size >= 0 {
				resp.Size = int64(len(held)) + ref.Size
			}
		}
		w, err := open(resp)
		if err != nil {
			if blob {
				c.deleteBlob(ref.Name)
			}
			return nil, err
		}
		n, err := w.Write(held)
		if err == nil {
			var k int64
			k, err = c.answerTo(ctx, cl, m, w)
			n += int(k)
		} else if blob {
			c.deleteBlob(ref.Name)
		}
		resp.Size = int64(n)
		if err != nil {
			return resp, err
		}
		return resp, nil
	}
}

// Stream is a streamed answer in progress.
type Stream struct {
	cl     *call
	ctx    context.Context
	result *Response
	err    error
}

// InferStream sends a request with Fed-Stream: true. Read it with Chunks;
// Close it when done (Close cancels a stream that has not finished).
func (c *Client) InferStream(ctx context.Context, r Request) (*Stream, error) {
	cl, err := c.start(ctx, &r, true)
	if err != nil {
		return nil, err
	}
	return &Stream{cl: cl, ctx: ctx}, nil
}

// RequestID of the stream.
func (s *Stream) RequestID() string { return s.cl.id }

// Pending is how many messages have arrived for the stream and wait to be
// read: a relay (the gateway's SSE) flushes its writes only once it has
// caught up, so a burst of chunks costs one flush, and the first chunk of a
// burst is never held back for later ones.
func (s *Stream) Pending() int {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	return len(s.cl.queue)
}

// Chunks yields each chunk as it arrives and ends after the final message;
// a failed request yields one last (zero Chunk, error). Once the stream has
// its end, anything more for it is dropped as late (Client.LateMessages).
func (s *Stream) Chunks() func(yield func(Chunk, error) bool) {
	return func(yield func(Chunk, error) bool) {
		defer func() {
			if s.result != nil || s.err != nil {
				s.cl.close()
			}
		}()
		for s.result == nil && s.err == nil {
			m, err := s.cl.next(s.ctx)
			if err != nil {
				s.err = err
				yield(Chunk{}, err)
				return
			}
			if m.final {
				if m.err != nil {
					s.err = m.err
					yield(Chunk{}, m.err)
					return
				}
				data := m.data
				if _, ok, _ := blobs.AnswerRef(m.hdr); ok { // a whole answer in fed_blobs despite Fed-Stream
					var buf bytes.Buffer
					if _, err := s.cl.c.answerTo(s.ctx, s.cl, m, &buf); err != nil {
						s.err = err
						yield(Chunk{}, err)
						return
					}
					data = buf.Bytes()
					s.cl.text = append(s.cl.text, data...)
				}
				if len(data) > 0 { // a node that answered whole despite Fed-Stream
					if !yield(Chunk{Seq: m.seq, Node: m.node, Data: data}, nil) {
						s.result = s.cl.response(m, s.cl.text)
						return
					}
				}
				s.result = s.cl.response(m, s.cl.text)
				return
			}
			if !yield(Chunk{Seq: m.seq, Node: m.node, Data: m.data}, nil) {
				return
			}
		}
	}
}

// Result is the finished stream's summary, or its error. Valid after Chunks ends.
func (s *Stream) Result() (*Response, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.result == nil {
		return nil, &wire.Error{Code: wire.CodeInternal, Description: "stream not finished", RequestID: s.RequestID()}
	}
	return s.result, nil
}

// Close ends the stream, cancelling it in the mesh when it has not finished.
// What still arrives for it is dropped as late.
func (s *Stream) Close() {
	if s.result == nil && s.err == nil {
		s.cl.cancel()
	}
	s.cl.close()
}
