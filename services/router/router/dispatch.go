package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/tracing"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// handleInfer runs on the infer endpoint's subscription goroutine and
// places the request there as far as it gets without waiting: parse, admit,
// decide, dispatch. No goroutine and no context per request: the placement
// then waits for its ack on nothing (acks.go), and the ack subscription, the
// scheduler (sched.go) or a queue wake moves it on from there.
func (s *Service) handleInfer(req micro.Request) {
	s.stats.requests.Add(1)
	m := &nats.Msg{Subject: req.Subject(), Reply: req.Reply(), Header: nats.Header(req.Headers()), Data: req.Data()}
	if m.Reply == "" {
		s.log.Warn().Str(logging.KeySubject, m.Subject).Str(logging.KeyRequest, m.Header.Get(wire.HdrRequestID)).
			Msg("infer request without a reply subject dropped: nobody to answer")
		return
	}
	if int(s.inFlight.Add(1)) > s.cfg.MaxInFlight {
		s.inFlight.Add(-1)
		s.stats.rejected.Add(1)
		rep := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID)}
		_ = s.nc.PublishMsg(rep.Fail(wire.CodeOverloaded, fmt.Sprintf("router overloaded: %d requests being placed", s.cfg.MaxInFlight)))
		return
	}
	p := s.newPlacement(m)
	p.slot = true
	if !s.active.begin(p) {
		s.inFlight.Add(-1)
		rep := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID)}
		_ = s.nc.PublishMsg(rep.Fail(wire.CodeNoCapacity, "router stopping: request not placed, send it again"))
		return
	}
	p.start()
}

// placement is one request being placed. It runs on no goroutine of its
// own: at any moment exactly one party owns it — the infer handler that
// received it, or whoever ended its latest wait (the ack subscription, the
// scheduler, a completion outcome during the finals grace, Stop). A wait
// has a generation (waiting); a party that wants to move the placement on
// swaps that generation for 0 and owns it if the swap succeeded, so an ack
// and its timeout never both act.
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
	// how the lost node was lost, for a takeover's final error
	how string
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

	// waiting is the generation of the wait the placement is parked in; 0
	// while a party runs it. gen is the last generation handed out.
	waiting atomic.Uint64
	gen     uint64
	// tm is the placement's one timer (ack deadline, retry delay, queue
	// limit or wake, finals grace), run by Service.sched.
	tm timer
	// the attempt in flight: its decision, ack token and span
	d     decision
	token uint64
	// statusTok is the token of the status question asked of the node
	// whose ack never came (askStatus); 0 when none is pending.
	statusTok uint64
	aspan     tracing.Span
	// queue limit of the current wait: why it ends (max_queue_ms or the
	// deadline) and max_queue_ms then
	byDeadline bool
	maxWait    time.Duration
	// err is the final error held over the finals grace
	err error
	// graceToks are the tokens of the status questions asked of the
	// uncertain nodes when the finals grace ran out (askGrace); graceLeft
	// counts those not answered yet (each reply may come on the ack
	// subscription while another party owns p); graceUntil bounds the wait
	// for them while the router's connection is down.
	graceToks  []uint64
	graceLeft  atomic.Int32
	graceHeld  atomic.Bool // an uncertain node answered held
	graceUntil time.Time
	// graceUnreached are the nodes whose status question found no
	// responder (a node cut off by its server's loss, reconnecting): asked
	// again each statusWait until graceUntil, not counted as no
	graceMu        sync.Mutex
	graceUnreached []string
	// slot: the request holds one of MaxInFlight (takeovers do not)
	slot bool
	// tracked: in Service.active from begin until done
	tracked bool
	// left: the placement left the queue (leaveQueue ran)
	left bool
	// onDecider: a decider runs the step (offload)
	onDecider  bool
	prev, next *placement // Service.active's list
	bp         *[]uint64  // pooled prefix block hashes, returned by done
}

// newPlacement is a client's request m as the router received it now.
func (s *Service) newPlacement(m *nats.Msg) *placement {
	capability, tenant := s.cfg.Subjects.InferParts(m.Subject)
	p := &placement{s: s, msg: m, inbound: Inbound{ID: m.Header.Get(wire.HdrRequestID),
		Capability: capability, Header: m.Header, Received: time.Now()}, trace: context.Background(), subjectTenant: tenant}
	p.tm.idx = -1
	return p
}

// start parses, admits and places the request, on the caller's goroutine
// until the placement waits.
func (p *placement) start() {
	s := p.s
	if tracing.Enabled() {
		p.trace, p.span = tracing.Start(tracing.Extract(p.trace, p.msg.Header), "fedmesh.route "+p.inbound.Capability, tracing.Server,
			tracing.KeyCapability.String(p.inbound.Capability))
	}
	if err := p.parse(); err != nil {
		p.fail(err)
		return
	}
	if err := p.admit(s.requests.Context()); err != nil {
		p.fail(err)
		return
	}
	if textCapability(p.inbound.Capability) {
		p.bp = blockPool.Get().(*[]uint64)
		p.query.blocks = blockHashes((*p.bp)[:0], p.msg.Data)
	}
	p.step()
}

// done ends the placement: every answer has been sent.
func (p *placement) done() {
	s := p.s
	if p.bp != nil {
		*p.bp = p.query.blocks[:0]
		p.query.blocks = nil
		blockPool.Put(p.bp)
		p.bp = nil
	}
	p.span.End()
	if p.slot {
		p.slot = false
		s.inFlight.Add(-1)
	}
	if p.tracked {
		p.tracked = false
		s.active.end(p)
	}
}

// park starts a wait of the placement and returns its generation. The
// caller gives the placement up: after registering what ends the wait it
// must not touch it again.
func (p *placement) park() uint64 {
	p.gen++
	p.waiting.Store(p.gen)
	return p.gen
}

// parked is called once everything that ends wait gen is registered: a
// placement that starts waiting while the router stops has its wait cut
// short like every other (Stop only reaches the waits it saw).
func (p *placement) parked(gen uint64) {
	if p.s.stopping.Load() {
		p.s.sched.expedite(&p.tm, gen)
	}
}

// fire runs the placement's timer of wait gen, unless the wait ended
// another way first.
func (p *placement) fire(kind timerKind, gen uint64) {
	s := p.s
	if !p.waiting.CompareAndSwap(gen, 0) {
		if kind == timerWake {
			s.queue.wakeUp(1, nil) // a wake it could not use: pass it on
		}
		return
	}
	switch kind {
	case timerAck:
		if !p.askStatus() {
			p.ackLost()
		}
	case timerStatus:
		s.acks.drop(p.statusTok)
		p.statusTok = 0
		p.ackLost()
	case timerRetry:
		p.step()
	case timerQueue:
		if err := p.expired(); err != nil {
			p.notPlaced(err)
			return
		}
		p.notPlaced(p.queueTimeout())
	case timerWake:
		p.query.busy = p.query.busy[:0] // a slot freed: busy nodes may have room now
		p.step()
	case timerGrace:
		s.answered.forget(p.spec.RequestID, p)
		if s.answered.has(p.spec.RequestID) {
			p.finalError(p.err, true)
			return
		}
		p.askGrace()
	case timerGraceStatus:
		if p.graceHeld.Load() {
			// a node said held while the wait was being restored below
			s.answered.forget(p.spec.RequestID, p)
			p.finalError(p.err, true)
			return
		}
		if p.graceLeft.Load() > 0 && !s.stopping.Load() && time.Now().Before(p.graceUntil) {
			// Some node has not answered. Its question or answer may wait
			// in a reconnect, the router's or a node's, or be lost in one:
			// a reply to a router that has just reconnected is dropped
			// until its subscription's interest reaches the node's server.
			// So wait on, bounded by graceUntil, and while connected ask
			// again each node that found no responder or had no answer.
			// Once the wait is restored another party may own p (a timer
			// scheduled after it ended fires on a generation nobody waits
			// in); an answer that came before it was restored left
			// graceHeld or graceLeft for the timer.
			var again []string // while cut off, the questions wait in the reconnect buffer
			if s.nc.Status() == nats.CONNECTED {
				p.graceMu.Lock()
				again, p.graceUnreached = p.graceUnreached, nil
				p.graceMu.Unlock()
				again = append(again, s.acks.unansweredGrace(p.graceToks)...)
			}
			next := time.Now().Add(statusWait)
			if next.After(p.graceUntil) {
				next = p.graceUntil
			}
			qs := p.graceQuestions(again, gen)
			p.waiting.Store(gen)
			s.sched.at(&p.tm, next, p, timerGraceStatus, gen)
			p.askGraceOf(qs, gen)
			return
		}
		s.answered.forget(p.spec.RequestID, p)
		p.finalError(p.err, s.answered.has(p.spec.RequestID))
	}
}

// graceReconnectWait bounds how much longer than statusWait the router
// waits for the uncertain nodes' status answers when some have not come
// (a reconnect, the router's or a node's, holds or loses them).
const graceReconnectWait = 2 * time.Second

// askGrace is the finals grace running out with no outcome from some
// uncertain node: before sending its own final error, the router asks each
// of them that has not reported silent the status question of a lost ack
// (askStatus), all at once, asynchronously, and waits up to statusWait,
// longer while some node has not answered: up to graceReconnectWait more,
// asking again each statusWait, while connected, every node whose question
// found no responder or got no answer. (A router cut off across the grace
// missed the outcomes too; a node cut off by its server's loss may have
// answered the client from its reconnect buffer; a reply to a router that
// has just reconnected is lost until its interest reaches the node's
// server.) One that says
// held answered the client or is answering it: no final error
// (finals_suppressed). When every one says no (or cannot be asked), or the
// wait ends, the error final goes out as before; a completion outcome that
// comes meanwhile still counts. The caller owns p and gives it up.
func (p *placement) askGrace() {
	s, id := p.s, p.spec.RequestID
	nodes := s.answered.unreported(id, p.uncertain)
	if len(nodes) == 0 {
		p.finalError(p.err, s.answered.has(id))
		return
	}
	p.graceLeft.Store(int32(len(nodes)))
	now := time.Now()
	p.graceUntil = now.Add(statusWait + graceReconnectWait)
	gen := p.park()
	// everything that ends the wait is registered before the outcomes
	// waiter: from then on another party may own p
	qs := p.graceQuestions(nodes, gen)
	s.sched.at(&p.tm, now.Add(statusWait), p, timerGraceStatus, gen)
	if settled, ans := s.answered.await(id, p.uncertain, p, gen); settled {
		// heard meanwhile: ask nothing
		if p.waiting.CompareAndSwap(gen, 0) {
			s.sched.cancel(&p.tm, gen)
			p.finalError(p.err, ans)
		}
		return
	}
	p.parked(gen)
	p.askGraceOf(qs, gen)
}

// graceQuestion is a status question of askGrace: the node and the reply
// subject its answer comes on.
type graceQuestion struct {
	node, reply string
	tok         uint64
}

// graceQuestions registers a status question of each of nodes for wait
// gen (their tokens in graceToks, for finalError to drop); the caller owns
// p and asks them with askGraceOf once the wait is set up.
func (p *placement) graceQuestions(nodes []string, gen uint64) []graceQuestion {
	s := p.s
	qs := make([]graceQuestion, len(nodes))
	for i, node := range nodes {
		tok, reply := s.acks.token()
		p.graceToks = append(p.graceToks, tok)
		s.acks.putGrace(tok, p, gen, node)
		qs[i] = graceQuestion{node, reply, tok}
	}
	return qs
}

// askGraceOf publishes the status questions qs of wait gen; one that cannot
// be sent counts as a no (graceNo). Any party may own p by then: only what
// is safe for all of them is touched.
func (p *placement) askGraceOf(qs []graceQuestion, gen uint64) {
	s, id := p.s, p.spec.RequestID
	if len(qs) == 0 {
		return
	}
	body, encErr := json.Marshal(api.StatusRequest{RequestID: id})
	for _, q := range qs {
		s.stats.statusAsked.Add(1)
		err := encErr
		if err == nil {
			err = s.nc.PublishMsg(&nats.Msg{Subject: s.cfg.Subjects.NodeStatus(q.node), Reply: q.reply, Data: body})
		}
		if err != nil {
			s.log.Warn().Err(err).Str(logging.KeyRequest, id).Str(logging.KeyNode, q.node).
				Msg("publish status question at the end of the finals grace")
			s.acks.drop(q.tok) // counted as a no now: not asked again (unansweredGrace)
			p.graceNo(gen)
		}
	}
}

// graceUnreachable notes that the status question of askGrace found no
// responder at node (its subscription is gone while it reconnects): not a
// no, the node is asked again at the next status wait (fire,
// timerGraceStatus) while graceUntil allows. Any party may call it.
func (p *placement) graceUnreachable(node string) {
	p.graceMu.Lock()
	p.graceUnreached = append(p.graceUnreached, node)
	p.graceMu.Unlock()
}

// graceNo counts an uncertain node that does not hold the request (or
// could not be asked) in the status wait gen of askGrace; the last one
// ends the wait with the error final. Any party may call it.
func (p *placement) graceNo(gen uint64) {
	if p.graceLeft.Add(-1) != 0 || !p.waiting.CompareAndSwap(gen, 0) {
		return
	}
	s := p.s
	s.sched.cancel(&p.tm, gen)
	s.answered.forget(p.spec.RequestID, p)
	p.finalError(p.err, s.answered.has(p.spec.RequestID))
}

// ackLost settles the attempt in flight whose ack never came and whose
// node did not say it holds the request: the targeted cancel takes it back
// there, the node stays uncertain (it may answer all the same) and the
// placement goes on as after any failed attempt.
func (p *placement) ackLost() {
	s := p.s
	s.acks.drop(p.token)
	s.cancelAttempt(p.spec.RequestID, p.msg.Header.Get(wire.HdrCancelKey), p.d.e.id)
	p.uncertain = append(p.uncertain, p.d.e.id)
	p.resolve(ackFailed, "ack timeout", errAckTimeout)
}

// statusWait bounds the wait for a node's answer to a status request
// (askStatus), and never past the request's deadline.
const statusWait = 250 * time.Millisecond

// askStatus is the ack wait running out: before withdrawing the attempt
// and placing the request elsewhere, the router asks the node once, on
// fed.node.<id>.status, whether it holds the request (it may have accepted
// and its ack been lost, e.g. in a server failover; placing again would give
// the client two answers). The question is asynchronous like the dispatch:
// its reply subject is another token on the ack subscription (acks.go), and
// the placement waits on its timer, at most statusWait. The dispatch's own
// token stays registered for the same wait, so an ack that comes late still
// counts. It reports false, having changed nothing, when there is no time
// left to ask. The caller owns p; once askStatus returned true it does not.
func (p *placement) askStatus() bool {
	s := p.s
	wait := min(statusWait, time.Until(p.deadline))
	if wait <= 0 || s.stopping.Load() {
		return false
	}
	body, err := json.Marshal(api.StatusRequest{RequestID: p.spec.RequestID})
	if err != nil {
		return false
	}
	s.stats.statusAsked.Add(1)
	tok, reply := s.acks.token()
	p.statusTok = tok
	gen := p.park()
	s.acks.put(p.token, p, gen) // the dispatch's ack, should it come late
	s.acks.putStatus(tok, p, gen)
	s.sched.at(&p.tm, time.Now().Add(wait), p, timerStatus, gen)
	p.parked(gen)
	err = s.nc.PublishMsg(&nats.Msg{Subject: s.cfg.Subjects.NodeStatus(p.d.e.id), Reply: reply, Data: body})
	if err == nil || !p.waiting.CompareAndSwap(gen, 0) {
		return true
	}
	// not asked: go on as without an answer
	s.sched.cancel(&p.tm, gen)
	s.acks.drop(tok)
	p.statusTok = 0
	p.ackLost()
	return true
}

// readStatus reports whether a status answer says the node holds the
// request. Anything else (not held, an error, no responders, a body that
// does not decode) is no.
func readStatus(m *nats.Msg) bool {
	if len(m.Data) == 0 || len(m.Data) > 256 || wire.ErrorFromHeader(m.Header) != nil {
		return false
	}
	var r api.StatusResponse
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false
	}
	return r.Held
}

// ackReturn is how long past Fed-Ack-Deadline the router still waits for
// an ack: a node may start the dispatch until that instant, and its ack then
// still has to come back. Giving up at the instant itself would withdraw
// (and blame) a node that did its part, and a request whose deadline is its
// ack deadline would get a final from the node and one from the router.
const ackReturn = 25 * time.Millisecond

// errAckTimeout is the error of an attempt whose ack never came.
var errAckTimeout = errors.New("ack timeout")

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
	ackDone             // accepted and answered already (Fed-Status: done after the final): placed and completed
	ackBusy             // the node is full: try another, or wait in the queue; not a failure
	ackDraining         // the node is stopping: try another; not a failure
	ackFailed           // no responders, ack timeout, refusal…: counts against max_retries
	ackLocal            // this router could not send (connection closed…): counts, but blames no node
	ackTooLarge         // the dispatch does not fit max_payload: final 413, nobody's failure
)

// step decides and dispatches until the placement waits (for an ack, a
// retry delay or a slot in the queue) or ends. A busy node is not a
// failure: the request goes on to the next untried node, and when every
// eligible node is full it waits in the router's queue for a free slot.
// The caller owns p and gives it up when step returns.
func (p *placement) step() {
	if p.offload() {
		return
	}
	s := p.s
	for {
		if err := p.expired(); err != nil {
			p.notPlaced(err)
			return
		}
		pol := s.policy.Load()
		p.query.matches = s.prefix.match(p.query.blocks, p.query.matchBuf[:0])
		d := s.cache.decide(&p.query, pol, s.rr.Add(1))
		if d.e != nil && p.w == nil && s.queue.length() > 0 {
			// room, but requests are waiting for it: queue behind them
			// rather than overtake them
			p.full = 0
			p.queueWait(true)
			return
		}
		if d.e == nil {
			if d.rejected[rejLoad] == 0 {
				p.notPlaced(p.noNodeError(&d))
				return
			}
			p.full = d.rejected[rejLoad]
			p.queueWait(false)
			return
		}
		if d.halfOpen && !d.e.probing.CompareAndSwap(false, true) {
			// another request took the half-open node's one probe slot meanwhile
			p.query.tried = append(p.query.tried, d.e)
			continue
		}
		if !p.attempt(&d) {
			return
		}
	}
}

// decideInlineMax bounds the nodes a decision may judge on the goroutine
// that moves a placement on (the infer or ack subscription, the
// scheduler): a decision over more goes to the deciders, so judging
// thousands of nodes (BenchmarkDecide: ~20 µs for 1,000, ~300 µs for
// 10,000; ~0.3 µs for 10) never holds up other requests' dispatches and
// acks, and uses every core.
const decideInlineMax = 256

// offload hands p to a decider when its decision is costly and one is
// free; true when it did (the decider owns p now).
func (p *placement) offload() bool {
	if p.onDecider {
		p.onDecider = false
		return false
	}
	s := p.s
	if s.cache.candidateCount(p.query.capability, p.query.model) <= decideInlineMax {
		return false
	}
	select {
	case s.deciders <- p:
		s.stats.offloaded.Add(1)
		return true
	default:
		return false // every decider is busy: decide here
	}
}

// decide is one decider: it runs the steps of placements handed to it by
// offload until the router stops.
func (s *Service) decide(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.deciders:
			p.onDecider = true
			p.step()
		}
	}
}

// expired is the error that ends a placement whose deadline passed or
// whose router is stopping; nil otherwise.
func (p *placement) expired() error {
	if p.s.stopping.Load() || !time.Now().Before(p.deadline) {
		return p.contextError()
	}
	return nil
}

// attempt dispatches to the decision's node, counting it as outstanding,
// and leaves the placement waiting for the ack, at most ack_timeout_ms and
// never past the request's deadline; the dispatch carries that instant as
// Fed-Ack-Deadline, after which the node must not start it. It returns
// true when step should decide again at once (the send failed and the
// attempt was settled here), false when the placement waits or ended.
func (p *placement) attempt(d *decision) bool {
	s := p.s
	ackBy := time.Now().Add(time.Duration(s.policy.Load().AckTimeoutMs) * time.Millisecond)
	if ackBy.After(p.deadline) {
		ackBy = p.deadline
	}
	m, hv, err := p.dispatchMsg(d, p.attempts+1, ackBy)
	if err != nil {
		if d.halfOpen {
			d.e.probing.Store(false) // nothing was sent: the probe slot is free again
		}
		p.notPlaced(err)
		return false
	}
	p.attempts++
	// counted before the ack: the node may finish (and its completion
	// outcome arrive) before the ack is read
	s.out.add(p.spec.RequestID, d.e, p.deadline.Add(s.cfg.OutstandingTTL), d.halfOpen, p.held(d))
	p.aspan = tracing.Span{}
	if tracing.Enabled() { // one span per attempt; the node's spans are its children
		var tctx context.Context
		tctx, p.aspan = tracing.Start(p.trace, "fedmesh.dispatch", tracing.Client, tracing.KeyRequest.String(p.spec.RequestID),
			tracing.KeyNode.String(d.e.id), tracing.KeyAttempt.Int(p.attempts), tracing.KeyModel.String(d.model),
			tracing.KeyDecidedBy.String(d.decidedBy), tracing.KeyTakeover.String(p.takeover))
		tracing.Inject(tctx, m.Header)
	}
	p.d = *d
	tok, reply := s.acks.token()
	p.token = tok
	m.Reply = reply
	// the ack, or the timer just past ackBy, moves the placement on from here
	gen := p.park()
	s.acks.put(tok, p, gen)
	s.sched.at(&p.tm, ackBy.Add(ackReturn), p, timerAck, gen)
	p.parked(gen)
	err = s.nc.PublishMsg(m)
	var tooLarge error
	if errors.Is(err, nats.ErrMaxPayload) {
		// max_payload shrank since dispatchMsg measured (a reconnect to
		// another server): still the request's size, not the node's fault
		tooLarge = p.tooLarge(m.Header, s.nc.MaxPayload())
	}
	hv.release()
	if err == nil {
		return false
	}
	// the send failed: settle the attempt here unless its timer took the
	// placement meanwhile
	if !p.waiting.CompareAndSwap(gen, 0) {
		return false
	}
	s.acks.drop(tok)
	s.sched.cancel(&p.tm, gen)
	if tooLarge != nil {
		return p.after(ackTooLarge, "", tooLarge)
	}
	// the dispatch may be out (the connection broke after it): take it back
	s.cancelAttempt(p.spec.RequestID, p.msg.Header.Get(wire.HdrCancelKey), d.e.id)
	p.uncertain = append(p.uncertain, d.e.id)
	return p.after(ackLocal, "dispatch error: "+err.Error(), err)
}

// resolve settles the attempt in flight and places on when it must.
func (p *placement) resolve(kind ackKind, why string, err error) {
	if p.after(kind, why, err) {
		p.step()
	}
}

// after settles the attempt in flight by what became of it: accepted ends
// the placement, busy and draining go on to another node at once (true), a
// failure waits the retry delay or ends the placement.
func (p *placement) after(kind ackKind, why string, err error) bool {
	s := p.s
	d := &p.d
	switch kind {
	case ackAccepted, ackDone:
	case ackBusy:
		p.aspan.Fail(wire.CodeOverloaded, why)
	default:
		p.aspan.Fail(wire.CodeOf(err), why)
	}
	p.aspan.End()
	p.aspan = tracing.Span{}
	if kind != ackAccepted {
		s.out.done(p.spec.RequestID, d.e.id) // also frees a half-open probe slot
	}
	if kind == ackDone {
		s.stats.doneAcks.Add(1)
		s.wakeFor(d.e, 1) // its slot is free again, as a completion outcome would say
	}
	if kind == ackTooLarge {
		p.attempts--
	}
	switch {
	case kind == ackAccepted || kind == ackDone:
		s.prefix.add(d.e, p.query.blocks)
		res := Result{Node: d.e.id, Model: d.model, Attempts: p.attempts, Score: d.total, DecidedBy: d.decidedBy,
			PredictedTTFTMs: d.predicted.ms, PrefixMatch: d.predicted.match}
		if p.w != nil {
			res.Queued = time.Since(p.w.since)
		}
		p.placed(&res)
		return false
	case kind == ackTooLarge:
		p.notPlaced(err)
		return false
	}
	if xerr := p.expired(); xerr != nil {
		p.notPlaced(xerr)
		return false
	}
	switch kind {
	case ackBusy:
		s.stats.busy.Add(1)
		p.busy = append(p.busy, d.e.id)
		p.query.busy = append(p.query.busy, d.e)
		s.publishDispatchFailed(&p.spec, p.inbound.Capability, d, p.attempts, why)
		s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, d.e.id).Int("attempt", p.attempts).
			Msg("node busy, trying another")
		return true
	case ackDraining:
		p.failures = append(p.failures, d.e.id+": "+why)
		p.query.tried = append(p.query.tried, d.e)
		s.publishDispatchFailed(&p.spec, p.inbound.Capability, d, p.attempts, why)
		return true
	}
	return p.retryAfter(s.policy.Load(), d, why, kind == ackFailed)
}

// placed ends a placement a node accepted.
func (p *placement) placed(res *Result) {
	p.leaveQueue()
	if p.takeover != "" {
		p.tookOver(res)
	} else {
		p.finish(res)
	}
	p.done()
}

// notPlaced ends a placement no node took with err (a takeover's with
// its lost final).
func (p *placement) notPlaced(err error) {
	p.leaveQueue()
	if p.takeover != "" {
		desc := err.Error()
		var we *wire.Error
		if errors.As(err, &we) {
			desc = we.Description
		}
		p.lost(p.how, "no node could take it over: "+desc)
		return
	}
	p.fail(err)
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
		deadline: p.deadline, tried: tried, attempts: p.attempts, model: d.model, instance: d.instance,
		resumable: d.resumable, takeover: p.takeover}
}

// retryAfter records a failed attempt and waits the retry delay before
// the next one (true: no delay, decide again now); when there must be no
// next one it ends the placement.
func (p *placement) retryAfter(pol *policyState, d *decision, why string, nodeFault bool) bool {
	s := p.s
	p.failed++
	p.failures = append(p.failures, d.e.id+": "+why)
	if nodeFault {
		s.publishDispatchFailed(&p.spec, p.inbound.Capability, d, p.attempts, why)
	}
	p.query.tried = append(p.query.tried, d.e)
	if p.failed > pol.MaxRetries {
		p.notPlaced(wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: all %d attempts failed (%s)%s",
			p.inbound.Capability, p.failed, strings.Join(p.failures, "; "), p.busyNote()))
		return false
	}
	s.stats.retries.Add(1)
	s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, d.e.id).Str("why", why).Int("attempt", p.attempts).
		Str("state", "retrying").Msg("dispatch failed, retrying on another node")
	delay := time.Duration(pol.RetryDelayMs*p.failed) * time.Millisecond
	if delay <= 0 {
		return true
	}
	at := time.Now().Add(delay)
	if at.After(p.deadline) {
		at = p.deadline // then the deadline ends it
	}
	gen := p.park()
	s.sched.at(&p.tm, at, p, timerRetry, gen)
	p.parked(gen)
	return false
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
	if tracing.Enabled() { // the attributes' slice is built even for a span that records nothing
		p.span.Set(tracing.KeyRequest.String(p.spec.RequestID), tracing.KeyNode.String(res.Node), tracing.KeyAttempt.Int(res.Attempts))
	}
	p.s.decisions.add(p.decision(res))
	for _, mw := range p.s.mw {
		mw.AfterDispatch(&p.inbound, res)
	}
}

// dispatchMsg builds the dispatch of attempt to the decision's node, or the
// final 413 when it would not fit the connection's max_payload.
// Its headers live in hv, which the caller releases once the message was
// published.
func (p *placement) dispatchMsg(d *decision, attempt int, ackBy time.Time) (*nats.Msg, *headerVals, error) {
	s := p.s
	// derived from the node id and the request's privacy, never from a
	// KV field: a catalog record cannot send data anywhere else
	subj := d.e.dispatchSubject(s.cfg.Subjects, p.spec.Privacy)
	hv := dispatchHeaders.Get().(*headerVals)
	h := hv.h
	for k, v := range p.msg.Header {
		h[k] = v
	}
	// only a router says a dispatch takes over from a lost node
	delete(h, wire.HdrTakeover)
	if p.takeover != "" {
		hv.set(wire.HdrTakeover, p.takeover)
	}
	hv.set(wire.HdrRequestID, p.spec.RequestID)
	hv.set(wire.HdrReplyTo, p.msg.Reply)
	hv.set(wire.HdrAttempt, strconv.Itoa(attempt))
	hv.set(wire.HdrRouteScore, strconv.FormatFloat(d.total, 'f', 3, 64))
	hv.set(wire.HdrDeadline, strconv.FormatInt(p.deadline.UnixMilli(), 10))
	hv.set(wire.HdrCapability, p.inbound.Capability)
	hv.set(wire.HdrAckDeadline, strconv.FormatInt(ackBy.UnixMilli(), 10))
	hv.set(wire.HdrAckDone, "true") // a done ack (answered at once) is understood here
	if d.model != "" {
		hv.set(wire.HdrModel, d.model)
	}
	m := &nats.Msg{Subject: subj, Header: h, Data: p.msg.Data}
	if limit := s.nc.MaxPayload(); int64(msgSize(h, m.Data)) > limit {
		err := p.tooLarge(h, limit)
		hv.release()
		return nil, nil, err
	}
	return m, hv, nil
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

// headerVals is a dispatch's header map, whose own single-value headers
// share one backing slice of values (nats.Header.Set allocates one per
// header). nats.go encodes a message's headers while PublishMsg runs, so
// both are free again once it returned: dispatchHeaders keeps them.
type headerVals struct {
	h    nats.Header
	vals []string
}

var dispatchHeaders = sync.Pool{New: func() any {
	return &headerVals{h: make(nats.Header, 24), vals: make([]string, 0, 10)}
}}

// release hands hv back to dispatchHeaders; the message built on it must
// not be used again.
func (hv *headerVals) release() {
	clear(hv.h)
	clear(hv.vals)
	hv.vals = hv.vals[:0]
	dispatchHeaders.Put(hv)
}

func (hv *headerVals) set(k, v string) {
	n := len(hv.vals)
	hv.vals = append(hv.vals, v)
	hv.h[k] = hv.vals[n : n+1 : n+1] // capped: an Add to one header never writes into the next
}

// onAck runs on the ack subscription (acks.go): it hands the ack to the
// placement waiting for it, which goes on from there on this goroutine
// (accepted: finish; busy, draining: the next node; failed: a retry timer).
// An ack nobody waits for any more (its attempt timed out) is dropped.
func (s *Service) onAck(m *nats.Msg) {
	r, ok := s.acks.take(m.Subject)
	if !ok {
		return
	}
	p := r.p
	if r.grace {
		// an uncertain node's answer at the end of the finals grace
		if noResponders(m) {
			p.graceUnreachable(r.node)
			return
		}
		if !readStatus(m) {
			p.graceNo(r.gen)
			return
		}
		s.stats.statusHeld.Add(1)
		p.graceHeld.Store(true)
		if !p.waiting.CompareAndSwap(r.gen, 0) {
			return // the timer has p; it reads graceHeld
		}
		s.sched.cancel(&p.tm, r.gen)
		s.answered.forget(p.spec.RequestID, p)
		s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).
			Msg("finals grace over, but an uncertain node holds the request: no final error from the router")
		p.finalError(p.err, true)
		return
	}
	if !p.waiting.CompareAndSwap(r.gen, 0) {
		return // the ack deadline passed meanwhile: its timer has the placement
	}
	s.sched.cancel(&p.tm, r.gen)
	if r.status {
		// the node's answer to askStatus
		p.statusTok = 0
		if !readStatus(m) {
			p.ackLost()
			return
		}
		s.acks.drop(p.token)
		s.stats.statusHeld.Add(1)
		s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, p.d.e.id).
			Msg("ack lost, but the node holds the request: placed there")
		p.resolve(p.heldAck(), "", nil)
		return
	}
	if p.statusTok != 0 {
		// the dispatch's ack came while the node was being asked
		s.acks.drop(p.statusTok)
		p.statusTok = 0
	}
	kind, why, err := p.readAck(m)
	p.resolve(kind, why, err)
}

// heldAck is a status answer saying held, taken as the accept whose ack was
// lost: the request is outstanding on the node until its completion outcome.
func (p *placement) heldAck() ackKind {
	s, d := p.s, &p.d
	if !s.out.accept(p.spec.RequestID, d.e.id, time.Now()) {
		// its completion outcome was handled already (as in readAck)
		d.e.completed()
	}
	return ackAccepted
}

// readAck says what the ack of the attempt in flight means, and takes the
// node's load from it.
func (p *placement) readAck(resp *nats.Msg) (ackKind, string, error) {
	s, d := p.s, &p.d
	if noResponders(resp) {
		return ackFailed, "no responders", nats.ErrNoResponders
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
	case wire.StatusDone:
		// The node answered at once: the final is out, the request over
		// (no load headers: it holds no slot any more).
		return ackDone, "", nil
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

// The status nats-server sends to a request's reply subject when nothing
// subscribes to its subject (nats.go keeps these names unexported).
const (
	natsStatusHdr    = "Status"
	natsNoResponders = "503"
)

// noResponders reports whether m is nats-server's no-responders status.
func noResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get(natsStatusHdr) == natsNoResponders
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
// key is the request's Fed-Cancel-Key: the cancel carries its digest for
// node (wire.WithdrawKey), which every node hears, never the key itself.
func (s *Service) withdraw(requestID, key, node string) bool {
	if !subjectToken(requestID) {
		return false
	}
	m := &nats.Msg{Subject: s.cfg.Subjects.Cancel(requestID), Header: nats.Header{wire.HdrNode: {node}}}
	if key != "" {
		m.Header.Set(wire.HdrCancelKey, wire.WithdrawKey(key, node))
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
	s.publishNodeFailed(spec, capability, d.e.id, d.instance, d.model, attempt, why)
}

// publishNodeFailed publishes a dispatch_failed outcome for node: code 429
// and no fault for busy, 503 and no fault for draining, else 503 and fault
// node (no responders, ack timeout, refusals, "node lost").
func (s *Service) publishNodeFailed(spec *wire.Spec, capability, node, instance, model string, attempt int, why string) {
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
		Attempt: attempt, Stream: spec.Stream, Fault: fault, InstanceID: instance, Time: time.Now()}
	if err := wire.PublishJSON(s.nc, s.cfg.Subjects.RouterFailed(node), ev); err != nil {
		s.log.Warn().Err(err).Str(logging.KeyNode, node).Str(logging.KeyRequest, spec.RequestID).Msg("publish dispatch_failed outcome")
	}
}

func (p *placement) contextError() error {
	if p.s.stopping.Load() {
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
// error, micro error headers) and reports the request as unplaced. After an
// attempt whose ack never came it first waits for the completed outcomes of
// the uncertain nodes (answered.go), on no goroutine: an outcome or the
// grace timer goes on. It waits up to finalGrace, less when the deadline is
// nearer, never less than minFinalGrace; when it runs out without a word
// from some uncertain node, askGrace asks them before the final error.
func (p *placement) fail(err error) {
	s := p.s
	if len(p.uncertain) == 0 {
		p.finalError(err, false)
		return
	}
	// never less than minFinalGrace: past the deadline the node may still
	// have started the attempt (Fed-Ack-Deadline is inclusive of its own
	// clock) and be sending its final; a 1 ms Fed-Timeout-Ms got two finals
	grace := min(finalGrace, max(time.Until(p.deadline), minFinalGrace))
	p.err = err
	gen := p.park()
	if settled, ans := s.answered.await(p.spec.RequestID, p.uncertain, p, gen); settled {
		// heard already: no wait (nobody else knows gen)
		p.waiting.Store(0)
		p.finalError(err, ans)
		return
	}
	s.sched.at(&p.tm, time.Now().Add(grace), p, timerGrace, gen)
}

// heardDuring ends the finals grace of wait gen: a node answered (ans), or
// every uncertain node reported silent.
func (p *placement) heardDuring(gen uint64, ans bool) {
	if !p.waiting.CompareAndSwap(gen, 0) {
		return
	}
	p.s.sched.cancel(&p.tm, gen)
	p.finalError(p.err, ans)
}

// finalError sends the final error, unless answered: a node whose ack was
// lost took the request and answered it (its completion outcome says so),
// and a final from the router would be a second one. It ends the placement.
func (p *placement) finalError(err error, answered bool) {
	defer p.done()
	s, in := p.s, &p.inbound
	for _, tok := range p.graceToks {
		s.acks.drop(tok) // status questions of askGrace not answered
	}
	p.graceToks = nil
	if answered {
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
