package router

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/tracing"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// handleInfer runs on the endpoint's subscription goroutine: it only takes
// an in-flight slot and hands the request to a goroutine, so one slow
// placement never holds up the next request.
func (s *Service) handleInfer(req micro.Request) {
	s.stats.requests.Add(1)
	m := &nats.Msg{Subject: req.Subject(), Reply: req.Reply(), Header: nats.Header(req.Headers()), Data: req.Data()}
	if m.Reply == "" {
		s.log.Warn().Str(logging.KeySubject, m.Subject).Str(logging.KeyRequest, m.Header.Get(wire.HdrRequestID)).
			Msg("infer request without a reply subject dropped: nobody to answer")
		return
	}
	rep := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID)}
	select {
	case s.sem <- struct{}{}:
	default:
		s.stats.rejected.Add(1)
		_ = s.nc.PublishMsg(rep.Fail(wire.CodeOverloaded, fmt.Sprintf("router overloaded: %d requests being placed", cap(s.sem))))
		return
	}
	if !s.requests.Go(func(ctx context.Context) {
		defer func() { <-s.sem }()
		s.route(ctx, m)
	}) {
		<-s.sem
		_ = s.nc.PublishMsg(rep.Fail(wire.CodeNoCapacity, "router stopping: request not placed, send it again"))
	}
}

// placement is one request being placed.
type placement struct {
	s        *Service
	msg      *nats.Msg
	inbound  Inbound
	spec     wire.Spec // the parsed routing headers; inbound.Spec is middleware's copy
	query    placementQuery
	deadline time.Time
	attempts int      // dispatches sent (Fed-Attempt)
	failed   int      // attempts the node failed (max_retries bounds these; busy and draining do not count)
	failures []string // "node: why" of every failed or draining attempt
	busy     []string // nodes that answered busy
	w        *waiter  // set once the request entered the wait queue
	full     int      // eligible nodes found full by the latest decision
	// takeover is the lost node this placement takes the request over from
	// (takeover.go): its dispatches carry Fed-Takeover, its final error
	// Fed-Lost-Node. "" for a client's request.
	takeover string
	// lostResumable: the lost node's catalog record said resumable when
	// the request was placed on it (the record may be gone by now)
	lostResumable bool
	// uncertain: the nodes of attempts whose ack never came (timeout,
	// broken send): each may have taken the request and answered the client.
	uncertain []string
	// subjectTenant is the tenant token of a secured request subject
	// (fed.infer.<capability>.<tenant>): the credential allowed only that
	// one, so it is the request's tenant whatever Fed-Tenant says.
	subjectTenant string
	// trace: the request's span context (the client's traceparent, then
	// this router's route span); each attempt is a child span. Background
	// while tracing is off.
	trace context.Context
	span  tracing.Span
}

// route places one request: parse, admit, decide and dispatch until a node
// accepts, finish. ctx ends when the router stops.
func (s *Service) route(ctx context.Context, m *nats.Msg) {
	capability, tenant := s.cfg.Subjects.InferParts(m.Subject)
	p := &placement{s: s, msg: m, inbound: Inbound{ID: m.Header.Get(wire.HdrRequestID),
		Capability: capability, Header: m.Header, Received: time.Now()}, trace: context.Background(), subjectTenant: tenant}
	if tracing.Enabled() {
		p.trace, p.span = tracing.Start(tracing.Extract(p.trace, m.Header), "fedmesh.route "+p.inbound.Capability, tracing.Server,
			tracing.KeyCapability.String(p.inbound.Capability))
		defer p.span.End()
	}
	if err := p.parse(); err != nil {
		p.fail(err)
		return
	}
	if err := p.admit(ctx); err != nil {
		p.fail(err)
		return
	}
	if textCapability(p.inbound.Capability) {
		bp := blockPool.Get().(*[]uint64)
		p.query.blocks = blockHashes((*bp)[:0], m.Data)
		defer func() { *bp = p.query.blocks[:0]; p.query.blocks = nil; blockPool.Put(bp) }()
	}
	ctx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	res, err := p.place(ctx)
	p.leaveQueue()
	if err != nil {
		p.fail(err)
		return
	}
	p.finish(&res)
}

// blockPool holds the prefix block hash slices of requests being placed.
var blockPool = sync.Pool{New: func() any { b := make([]uint64, 0, maxPrefixBlocks); return &b }}

// textCapability: requests whose prompt a model server may cache.
func textCapability(c string) bool { return c == wire.CapGenerate || c == wire.CapCode }

// parse checks the capability and decodes the routing headers.
func (p *placement) parse() error {
	in := &p.inbound
	if err := wire.ValidateCapability(in.Capability); err != nil {
		return wire.Errorf(wire.CodeNotFound, "capability %q: %v", in.Capability, err)
	}
	spec, err := wire.ParseSpec(in.Header)
	if err != nil {
		return err
	}
	if t := p.subjectTenant; t != "" {
		if err := wire.ValidateID("tenant", t); err != nil {
			return wire.Errorf(wire.CodeBadRequest, "subject %s: the token after the capability is the tenant: %v", p.msg.Subject, err)
		}
		spec.Tenant = t // the identity the server let publish here, not a header
	}
	if spec.RequestID == "" {
		spec.RequestID = nuid.Next()
	}
	p.spec = spec
	in.ID, in.Spec = spec.RequestID, spec
	p.deadline = in.Received.Add(spec.EffectiveTimeout())
	p.query = newPlacementQuery(in.Capability, &p.spec, p.s.cfg.Region)
	return nil
}

// admit runs the middleware that may refuse the request (tenant limits…).
func (p *placement) admit(ctx context.Context) error {
	for _, mw := range p.s.mw {
		if err := mw.BeforeRoute(ctx, &p.inbound); err != nil {
			return err
		}
	}
	return nil
}

// ackKind is what became of one dispatch.
type ackKind uint8

const (
	ackAccepted ackKind = iota
	ackBusy             // the node is full: try another, or wait in the queue; not a failure
	ackDraining         // the node is stopping: try another; not a failure
	ackFailed           // no responders, ack timeout, refusal…: counts against max_retries
	ackLocal            // this router could not send (connection closed…): counts, but blames no node
	ackTooLarge         // the dispatch does not fit max_payload: final 413, nobody's failure
)

// place decides and dispatches until a node accepts the request, retrying on
// nodes not tried yet. A busy node is not a failure: the request goes on to
// the next untried node, and when every eligible node is full it waits in
// the router's queue for a free slot.
func (p *placement) place(ctx context.Context) (Result, error) {
	s := p.s
	for {
		pol := s.policy.Load()
		p.query.matches = s.prefix.match(p.query.blocks, p.query.matchBuf[:0])
		d := s.cache.decide(&p.query, pol, s.rr.Add(1))
		if d.e != nil && p.w == nil && s.queue.length() > 0 {
			// room, but requests are waiting for it: queue behind them
			// rather than overtake them
			p.full = 0
			if err := p.queueWait(ctx, true); err != nil {
				return Result{}, err
			}
			continue
		}
		if d.e == nil {
			if d.rejected[rejLoad] == 0 {
				return Result{}, p.noNodeError(&d)
			}
			p.full = d.rejected[rejLoad]
			if err := p.queueWait(ctx, false); err != nil {
				return Result{}, err
			}
			continue
		}
		if d.halfOpen && !d.e.probing.CompareAndSwap(false, true) {
			// another request took the half-open node's one probe slot meanwhile
			p.query.tried = append(p.query.tried, d.e)
			continue
		}
		kind, why, err := p.attempt(ctx, &d)
		switch {
		case kind == ackAccepted:
			s.prefix.add(d.e, p.query.blocks)
			res := Result{Node: d.e.id, Model: d.model, Attempts: p.attempts, Score: d.total, DecidedBy: d.decidedBy,
				PredictedTTFTMs: d.predicted.ms, PrefixMatch: d.predicted.match}
			if p.w != nil {
				res.Queued = time.Since(p.w.since)
			}
			return res, nil
		case kind == ackTooLarge:
			return Result{}, err
		case ctx.Err() != nil:
			return Result{}, p.contextError(ctx)
		case kind == ackBusy:
			s.stats.busy.Add(1)
			p.busy = append(p.busy, d.e.id)
			p.query.busy = append(p.query.busy, d.e)
			s.publishDispatchFailed(&p.spec, p.inbound.Capability, &d, p.attempts, why)
			s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, d.e.id).Int("attempt", p.attempts).
				Msg("node busy, trying another")
		case kind == ackDraining:
			p.failures = append(p.failures, d.e.id+": "+why)
			p.query.tried = append(p.query.tried, d.e)
			s.publishDispatchFailed(&p.spec, p.inbound.Capability, &d, p.attempts, why)
		default:
			if err := p.retryAfter(ctx, pol, &d, why, kind == ackFailed); err != nil {
				return Result{}, err
			}
		}
	}
}

// attempt dispatches to the decision's node, counting it as outstanding,
// and says what became of it (with why when the node did not accept).
func (p *placement) attempt(ctx context.Context, d *decision) (ackKind, string, error) {
	s := p.s
	m, err := p.dispatchMsg(d, p.attempts+1)
	if err != nil {
		return ackTooLarge, "", err
	}
	p.attempts++
	// counted before the ack: the node may finish (and its completion
	// outcome arrive) before RequestMsg returns here
	s.out.add(p.spec.RequestID, d.e, p.deadline.Add(s.cfg.OutstandingTTL), d.halfOpen, p.held(d))
	var span tracing.Span
	if tracing.Enabled() { // one span per attempt; the node's spans are its children
		var tctx context.Context
		tctx, span = tracing.Start(p.trace, "fedmesh.dispatch", tracing.Client, tracing.KeyRequest.String(p.spec.RequestID),
			tracing.KeyNode.String(d.e.id), tracing.KeyAttempt.Int(p.attempts), tracing.KeyModel.String(d.model),
			tracing.KeyDecidedBy.String(d.decidedBy), tracing.KeyTakeover.String(p.takeover))
		tracing.Inject(tctx, m.Header)
	}
	kind, why, err := p.dispatch(ctx, d, m)
	switch kind {
	case ackAccepted:
	case ackBusy:
		span.Fail(wire.CodeOverloaded, why)
	default:
		span.Fail(wire.CodeOf(err), why)
	}
	span.End()
	if kind != ackAccepted {
		s.out.done(p.spec.RequestID, d.e.id) // also frees a half-open probe slot
	}
	if kind == ackTooLarge {
		p.attempts--
	}
	return kind, why, err
}

// held is what a takeover of this dispatch needs should its node be lost
// after accepting it: a snapshot, so the takeover never shares the
// placement's changing state.
func (p *placement) held(d *decision) *held {
	var tried []*entry
	if len(p.query.tried) > 0 {
		tried = append(tried, p.query.tried...)
	}
	return &held{msg: p.msg, spec: p.spec, capability: p.inbound.Capability, received: p.inbound.Received,
		deadline: p.deadline, tried: tried, attempts: p.attempts, model: d.model, resumable: d.resumable,
		takeover: p.takeover}
}

// retryAfter records a failed attempt and waits before the next one; it
// returns the error to answer with when there must be no next one.
func (p *placement) retryAfter(ctx context.Context, pol *policyState, d *decision, why string, nodeFault bool) error {
	s := p.s
	p.failed++
	p.failures = append(p.failures, d.e.id+": "+why)
	if nodeFault {
		s.publishDispatchFailed(&p.spec, p.inbound.Capability, d, p.attempts, why)
	}
	p.query.tried = append(p.query.tried, d.e)
	if p.failed > pol.MaxRetries {
		return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: all %d attempts failed (%s)%s",
			p.inbound.Capability, p.failed, strings.Join(p.failures, "; "), p.busyNote())
	}
	s.stats.retries.Add(1)
	s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, d.e.id).Str("why", why).Int("attempt", p.attempts).
		Str("state", "retrying").Msg("dispatch failed, retrying on another node")
	t := time.NewTimer(time.Duration(pol.RetryDelayMs*p.failed) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return p.contextError(ctx)
	case <-t.C:
		return nil
	}
}

// busyNote names the nodes that answered busy, for a final 503.
func (p *placement) busyNote() string {
	if len(p.busy) == 0 {
		return ""
	}
	return fmt.Sprintf("; busy: %s", strings.Join(p.busy, ", "))
}

// finish counts a placed request and tells the middleware.
func (p *placement) finish(res *Result) {
	p.s.stats.placed.Add(1)
	p.span.Set(tracing.KeyRequest.String(p.spec.RequestID), tracing.KeyNode.String(res.Node), tracing.KeyAttempt.Int(res.Attempts))
	p.s.decisions.add(p.decision(res))
	for _, mw := range p.s.mw {
		mw.AfterDispatch(&p.inbound, res)
	}
}

// dispatchMsg builds the dispatch of attempt to the decision's node, or the
// final 413 when it would not fit the connection's max_payload.
func (p *placement) dispatchMsg(d *decision, attempt int) (*nats.Msg, error) {
	s := p.s
	// derived from the node id and the request's privacy, never from a
	// KV field: a catalog record cannot send data anywhere else
	subj := s.cfg.Subjects.NodeInferAt(d.e.id, p.spec.Privacy.String())
	h := make(nats.Header, len(p.msg.Header)+10)
	for k, v := range p.msg.Header {
		h[k] = v
	}
	// only a router says a dispatch takes over from a lost node
	delete(h, wire.HdrTakeover)
	if p.takeover != "" {
		h.Set(wire.HdrTakeover, p.takeover)
	}
	h.Set(wire.HdrRequestID, p.spec.RequestID)
	h.Set(wire.HdrReplyTo, p.msg.Reply)
	h.Set(wire.HdrAttempt, strconv.Itoa(attempt))
	h.Set(wire.HdrRouteScore, strconv.FormatFloat(d.total, 'f', 3, 64))
	h.Set(wire.HdrDeadline, strconv.FormatInt(p.deadline.UnixMilli(), 10))
	h.Set(wire.HdrCapability, p.inbound.Capability)
	// set for real in dispatch, once the ack wait starts; a Unix-ms value
	// of today's width keeps the size right
	h.Set(wire.HdrAckDeadline, strconv.FormatInt(p.deadline.UnixMilli(), 10))
	if d.model != "" {
		h.Set(wire.HdrModel, d.model)
	}
	m := &nats.Msg{Subject: subj, Header: h, Data: p.msg.Data}
	if limit := s.nc.MaxPayload(); int64(msgSize(h, m.Data)) > limit {
		return nil, p.tooLarge(h, limit)
	}
	return m, nil
}

// tooLarge is the final 413 for a request whose dispatch exceeds limit.
func (p *placement) tooLarge(h nats.Header, limit int64) error {
	req, disp := msgSize(p.msg.Header, p.msg.Data), msgSize(h, p.msg.Data)
	s := p.s
	s.stats.tooLarge.Add(1)
	return wire.Errorf(wire.CodeTooLarge, "request of %d bytes does not fit the dispatch limit of %d bytes "+
		"(max_payload %d minus %d bytes of dispatch headers); send large bodies with the SDK (out of band)",
		req, limit-int64(disp-req), limit, disp-req)
}

// msgSize is a message's size as NATS checks it against max_payload: the
// headers as nats.go encodes them ("NATS/1.0\r\n", "Key: value\r\n" per
// value with the value trimmed, "\r\n") plus the data. The subject and
// reply subject do not count.
func msgSize(h nats.Header, data []byte) int {
	n := len(data)
	if len(h) == 0 {
		return n
	}
	n += len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(textproto.TrimString(v)) + len("\r\n")
		}
	}
	return n
}

// dispatch hands the request to the chosen node and waits for its ack, at
// most ack_timeout_ms and never past the request's deadline; the dispatch
// carries that instant as Fed-Ack-Deadline, after which the node must not
// start it. When the router gives up waiting it cancels the attempt on that
// node alone (the ack may be lost, not the dispatch).
func (p *placement) dispatch(ctx context.Context, d *decision, m *nats.Msg) (ackKind, string, error) {
	s := p.s
	ackCtx, cancel := context.WithTimeout(ctx, time.Duration(s.policy.Load().AckTimeoutMs)*time.Millisecond)
	defer cancel()
	ackBy, _ := ackCtx.Deadline()
	m.Header.Set(wire.HdrAckDeadline, strconv.FormatInt(ackBy.UnixMilli(), 10))
	resp, err := s.nc.RequestMsgWithContext(ackCtx, m)
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		// max_payload shrank since dispatchMsg measured (a reconnect to
		// another server): still the request's size, not the node's fault
		return ackTooLarge, "", p.tooLarge(m.Header, s.nc.MaxPayload())
	case errors.Is(err, nats.ErrNoResponders):
		return ackFailed, "no responders", err
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		s.cancelAttempt(p.spec.RequestID, p.msg.Header.Get(wire.HdrCancelKey), d.e.id)
		p.uncertain = append(p.uncertain, d.e.id)
		return ackFailed, "ack timeout", err
	case err != nil:
		// the dispatch may be out (the connection broke after it): take it back
		s.cancelAttempt(p.spec.RequestID, p.msg.Header.Get(wire.HdrCancelKey), d.e.id)
		p.uncertain = append(p.uncertain, d.e.id)
		return ackLocal, "dispatch error: " + err.Error(), err
	}
	switch st := resp.Header.Get(wire.HdrStatus); st {
	case wire.StatusAccepted:
		s.learnAck(d.e, resp.Header, false)
		if !s.out.accept(p.spec.RequestID, d.e.id, time.Now()) {
			// A fast node finished, and its completion outcome was handled,
			// before this ack was read: the count it reported includes a
			// request that is gone already.
			d.e.completed()
		}
		return ackAccepted, "", nil
	case wire.StatusBusy:
		s.learnAck(d.e, resp.Header, true)
		return ackBusy, st, errors.New(st)
	case wire.StatusDraining:
		return ackDraining, st, errors.New(st)
	default:
		if we := wire.ErrorFromHeader(resp.Header); we != nil {
			return ackFailed, fmt.Sprintf("refused with %d: %s", we.Code, we.Description), we
		}
		return ackFailed, fmt.Sprintf("unexpected ack status %q", st), errors.New("bad ack")
	}
}

// cancelAttempt takes back one dispatch whose ack never came: a cancel on
// fed.cancel.<request_id> with Fed-Node naming the node, so only that node
// stops the request (it may have accepted with the ack lost) and another
// node the router places it on next is not touched. A request id that is not
// one subject token cannot be cancelled (DESIGN §2).
func (s *Service) cancelAttempt(requestID, key, node string) {
	if s.withdraw(requestID, key, node) {
		s.stats.cancels.Add(1)
	}
}

// withdraw publishes the targeted cancel of requestID on node (DESIGN §3.4);
// false when the id cannot be a subject token.
// key is the request's Fed-Cancel-Key: the node ignores a cancel without it.
func (s *Service) withdraw(requestID, key, node string) bool {
	if !subjectToken(requestID) {
		return false
	}
	m := &nats.Msg{Subject: s.cfg.Subjects.Cancel(requestID), Header: nats.Header{wire.HdrNode: {node}}}
	if key != "" {
		m.Header.Set(wire.HdrCancelKey, key)
	}
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn().Err(err).Str(logging.KeyRequest, requestID).Str(logging.KeyNode, node).Msg("publish targeted cancel")
	}
	return true
}

// subjectToken reports whether id can be one subject token.
func subjectToken(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch id[i] {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return false
		}
	}
	return true
}

// publishDispatchFailed tells health that the node did not take a request.
func (s *Service) publishDispatchFailed(spec *wire.Spec, capability string, d *decision, attempt int, why string) {
	s.publishNodeFailed(spec, capability, d.e.id, d.model, attempt, why)
}

// publishNodeFailed publishes a dispatch_failed outcome for node: code 429
// and no fault for busy, 503 and no fault for draining, else 503 and fault
// node (no responders, ack timeout, refusals, "node lost").
func (s *Service) publishNodeFailed(spec *wire.Spec, capability, node, model string, attempt int, why string) {
	// A busy node is healthy and full: 429 keeps it out of health's failure
	// count (as does "draining" in why); those two are nobody's fault. No
	// responders, ack timeouts and refusals are the node's: 503, fault node.
	code, fault := wire.CodeNoCapacity, record.FaultNode
	switch why {
	case wire.StatusBusy:
		code, fault = wire.CodeOverloaded, ""
	case wire.StatusDraining:
		fault = ""
	}
	ev := record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: node, RequestID: spec.RequestID,
		Code: code, Error: why, Capability: capability, Model: model, Tenant: spec.Tenant,
		Attempt: attempt, Stream: spec.Stream, Fault: fault, Time: time.Now()}
	if err := wire.PublishJSON(s.nc, s.cfg.Subjects.RouterFailed(node), ev); err != nil {
		s.log.Warn().Err(err).Str(logging.KeyNode, node).Str(logging.KeyRequest, spec.RequestID).Msg("publish dispatch_failed outcome")
	}
}

func (p *placement) contextError(ctx context.Context) error {
	if p.s.requests.Context().Err() != nil {
		return wire.Errorf(wire.CodeNoCapacity, "router shutting down after %d attempts", p.attempts)
	}
	return wire.Errorf(wire.CodeTimeout, "deadline passed while placing the request after %d attempts", p.attempts)
}

// noNodeError explains a decision that found no node, or the end of the
// retries when every remaining candidate was tried.
func (p *placement) noNodeError(d *decision) error {
	r := &p.query
	what := r.capability
	if r.model != "" {
		what += " model " + r.model
	}
	if len(p.failures) > 0 {
		return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: %d attempts failed (%s)%s and no untried node is eligible",
			what, len(p.failures), strings.Join(p.failures, "; "), p.busyNote())
	}
	switch {
	case d.code == wire.CodeNotFound && r.model != "":
		return wire.Errorf(wire.CodeNotFound, "unknown model %q for capability %s: no node serves it", r.model, r.capability)
	case d.code == wire.CodeNotFound:
		return wire.Errorf(wire.CodeNotFound, "unknown capability %s", r.capability)
	case d.serving == 0:
		return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: no node is registered for it", what)
	case d.code == wire.CodePrivacy:
		msg := fmt.Sprintf("no node serving %s is cleared for privacy %s", what, r.q.privacy)
		if regions := r.q.spec.Regions; regions != nil {
			msg += " in regions " + strings.Join(regions, ",")
		}
		return wire.Errorf(wire.CodePrivacy, "%s (%d nodes checked)", msg, d.serving)
	}
	var parts []string
	for rej, n := range d.rejected {
		if n > 0 && reject(rej) != rejNone {
			parts = append(parts, fmt.Sprintf("%d %s", n, rejectSummary(reject(rej))))
		}
	}
	return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: none of %d nodes is eligible (%s)", what, d.serving, strings.Join(parts, ", "))
}

func rejectSummary(r reject) string {
	switch r {
	case rejClearance:
		return "below the privacy level"
	case rejRegion:
		return "outside Fed-Regions"
	case rejCircuitOpen:
		return "circuit open"
	case rejProbeBusy:
		return "half-open with a probe in flight"
	case rejUnhealthy:
		return "unhealthy"
	case rejDraining:
		return "draining"
	case rejLatency:
		return "over Fed-Max-Latency-Ms"
	case rejThroughput:
		return "under Fed-Min-Throughput"
	case rejLoad:
		return "at capacity"
	case rejMinScore:
		return "below min_score"
	case rejTried:
		return "already tried"
	case rejNotResumable:
		return "not resumable"
	case rejCannotContinue:
		return "cannot continue a stream"
	}
	return "rejected"
}

// fail answers the client with a final error (empty payload, Fed-Status:
// error, micro error headers) and reports the request as unplaced.
func (p *placement) fail(err error) {
	s, in := p.s, &p.inbound
	if len(p.uncertain) > 0 && s.nodeAnswered(p) {
		// A node whose ack was lost took the request and answered it (its
		// completion outcome says so): a final from the router would be a
		// second one.
		s.stats.finalsSuppressed.Add(1)
		s.log.Debug().Str(logging.KeyRequest, in.ID).Msg("a node answered an attempt whose ack was lost: no final error from the router")
		return
	}
	code := wire.CodeOf(err)
	p.span.Fail(code, "not placed")
	desc := err.Error()
	var we *wire.Error
	if errors.As(err, &we) {
		desc = we.Description
	}
	rep := wire.Reply{Inbox: p.msg.Reply, RequestID: in.ID}
	m := rep.Fail(code, desc)
	if p.attempts > 0 {
		m.Header.Set(wire.HdrAttempts, strconv.Itoa(p.attempts))
	}
	if p.takeover != "" {
		// this final replaces the lost node's: clients accept it after that
		// node's messages
		m.Header.Set(wire.HdrLostNode, p.takeover)
	}
	if perr := s.nc.PublishMsg(m); perr != nil {
		s.log.Warn().Err(perr).Str(logging.KeyRequest, in.ID).Msg("publish final error to client")
	}
	s.stats.unplaced.Add(1)
	ev := record.Unplaced{RequestID: in.ID, Capability: in.Capability, Model: in.Spec.Model,
		Tenant: in.Spec.Tenant, Code: code, Error: desc, Attempts: p.attempts, Time: time.Now()}
	if perr := wire.PublishJSON(s.nc, s.cfg.Subjects.Unplaced(), ev); perr != nil {
		s.log.Warn().Err(perr).Str(logging.KeyRequest, in.ID).Msg("publish unplaced event")
	}
	werr := &wire.Error{Code: code, Description: desc, RequestID: in.ID}
	for _, mw := range s.mw {
		mw.OnError(in, werr)
	}
}

// nodeAnswered waits up to finalGrace (less when the deadline is nearer) for
// a non-silent completion outcome of p's request, or for every uncertain
// node to report silent.
func (s *Service) nodeAnswered(p *placement) bool {
	// never less than minFinalGrace: past the deadline the node may still
	// have started the attempt (Fed-Ack-Deadline is inclusive of its own
	// clock) and be sending its final; a 1 ms Fed-Timeout-Ms got two finals
	grace := min(finalGrace, max(time.Until(p.deadline), minFinalGrace))
	return s.answered.wait(context.Background(), p.spec.RequestID, p.uncertain, grace)
}
