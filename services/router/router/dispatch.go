package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
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
	attempts int
	failures []string // "node: why" of every failed attempt
}

// route places one request: parse, admit, decide and dispatch until a node
// accepts, finish. ctx ends when the router stops.
func (s *Service) route(ctx context.Context, m *nats.Msg) {
	p := &placement{s: s, msg: m, inbound: Inbound{ID: m.Header.Get(wire.HdrRequestID),
		Capability: s.cfg.Subjects.CapabilityOf(m.Subject), Header: m.Header, Received: time.Now()}}
	if err := p.parse(); err != nil {
		p.fail(err)
		return
	}
	if err := p.admit(ctx); err != nil {
		p.fail(err)
		return
	}
	ctx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	res, err := p.place(ctx)
	if err != nil {
		p.fail(err)
		return
	}
	p.finish(&res)
}

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

// place decides and dispatches until a node accepts the request, retrying on
// nodes not tried yet.
func (p *placement) place(ctx context.Context) (Result, error) {
	s := p.s
	for {
		pol := s.policy.Load()
		d := s.cache.decide(&p.query, pol, s.rr.Add(1))
		if d.e == nil {
			return Result{}, p.noNodeError(&d)
		}
		if d.halfOpen && !d.e.probing.CompareAndSwap(false, true) {
			// another request took the half-open node's one probe slot meanwhile
			p.query.tried = append(p.query.tried, d.e)
			continue
		}
		why, err := p.attempt(ctx, &d)
		if err == nil {
			return Result{Node: d.e.id, Model: d.model, Attempts: p.attempts, Score: d.total}, nil
		}
		if ctx.Err() != nil {
			return Result{}, p.contextError(ctx)
		}
		if err := p.retryAfter(ctx, pol, &d, why); err != nil {
			return Result{}, err
		}
	}
}

// attempt dispatches to the decision's node, counting it as outstanding,
// and returns nil when the node accepted, else why it did not.
func (p *placement) attempt(ctx context.Context, d *decision) (string, error) {
	s := p.s
	p.attempts++
	// counted before the ack: the node may finish (and its completion
	// outcome arrive) before RequestMsg returns here
	s.out.add(p.spec.RequestID, d.e, p.deadline.Add(s.cfg.OutstandingTTL), d.halfOpen)
	why, err := p.dispatch(ctx, d)
	if err != nil {
		s.out.done(p.spec.RequestID, d.e.id) // also frees a half-open probe slot
	}
	return why, err
}

// retryAfter records a failed attempt and waits before the next one; it
// returns the error to answer with when there must be no next one.
func (p *placement) retryAfter(ctx context.Context, pol *policyState, d *decision, why string) error {
	s := p.s
	p.failures = append(p.failures, d.e.id+": "+why)
	s.publishDispatchFailed(&p.spec, p.inbound.Capability, d, p.attempts, why)
	p.query.tried = append(p.query.tried, d.e)
	if p.attempts > pol.MaxRetries {
		return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: all %d attempts failed (%s)",
			p.inbound.Capability, p.attempts, strings.Join(p.failures, "; "))
	}
	s.stats.retries.Add(1)
	s.log.Debug().Str(logging.KeyRequest, p.spec.RequestID).Str(logging.KeyNode, d.e.id).Str("why", why).Int("attempt", p.attempts).
		Str("state", "retrying").Msg("dispatch failed, retrying on another node")
	t := time.NewTimer(time.Duration(pol.RetryDelayMs*p.attempts) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return p.contextError(ctx)
	case <-t.C:
		return nil
	}
}

// finish counts a placed request and tells the middleware.
func (p *placement) finish(res *Result) {
	p.s.stats.placed.Add(1)
	for _, mw := range p.s.mw {
		mw.AfterDispatch(&p.inbound, res)
	}
}

// dispatch hands the request to the chosen node and waits for its ack. It
// returns nil when the node accepted, else why it did not.
func (p *placement) dispatch(ctx context.Context, d *decision) (string, error) {
	s := p.s
	subj := d.subject
	if subj == "" {
		subj = s.cfg.Subjects.NodeInfer(d.e.id)
	}
	h := make(nats.Header, len(p.msg.Header)+8)
	for k, v := range p.msg.Header {
		h[k] = v
	}
	h.Set(wire.HdrRequestID, p.spec.RequestID)
	h.Set(wire.HdrReplyTo, p.msg.Reply)
	h.Set(wire.HdrAttempt, strconv.Itoa(p.attempts))
	h.Set(wire.HdrRouteScore, strconv.FormatFloat(d.total, 'f', 3, 64))
	h.Set(wire.HdrDeadline, strconv.FormatInt(p.deadline.UnixMilli(), 10))
	h.Set(wire.HdrCapability, p.inbound.Capability)
	if d.model != "" {
		h.Set(wire.HdrModel, d.model)
	}
	ackCtx, cancel := context.WithTimeout(ctx, time.Duration(s.policy.Load().AckTimeoutMs)*time.Millisecond)
	defer cancel()
	resp, err := s.nc.RequestMsgWithContext(ackCtx, &nats.Msg{Subject: subj, Header: h, Data: p.msg.Data})
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return "no responders", err
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return "ack timeout", err
	case err != nil:
		return "dispatch error: " + err.Error(), err
	}
	switch st := resp.Header.Get(wire.HdrStatus); st {
	case wire.StatusAccepted:
		return "", nil
	case wire.StatusBusy, wire.StatusDraining:
		return st, errors.New(st)
	default:
		if we := wire.ErrorFromHeader(resp.Header); we != nil {
			return fmt.Sprintf("refused with %d: %s", we.Code, we.Description), we
		}
		return fmt.Sprintf("unexpected ack status %q", st), errors.New("bad ack")
	}
}

// publishDispatchFailed tells health that the node could not take a request.
func (s *Service) publishDispatchFailed(spec *wire.Spec, capability string, d *decision, attempt int, why string) {
	// A busy node is healthy and full: 429 keeps it out of health's failure
	// count (as does "draining" in why); no responders and ack timeouts are 503.
	code := wire.CodeNoCapacity
	if why == wire.StatusBusy {
		code = wire.CodeOverloaded
	}
	ev := record.Outcome{Kind: record.OutcomeDispatchFailed, NodeID: d.e.id, RequestID: spec.RequestID,
		Code: code, Error: why, Capability: capability, Model: d.model, Tenant: spec.Tenant,
		Attempt: attempt, Stream: spec.Stream, Time: time.Now()}
	if err := wire.PublishJSON(s.nc, s.cfg.Subjects.Outcome(d.e.id), ev); err != nil {
		s.log.Warn().Err(err).Str(logging.KeyNode, d.e.id).Str(logging.KeyRequest, spec.RequestID).Msg("publish dispatch_failed outcome")
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
	if p.attempts > 0 {
		return wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: all %d attempts failed (%s) and no untried node is eligible",
			what, p.attempts, strings.Join(p.failures, "; "))
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
	}
	return "rejected"
}

// fail answers the client with a final error (empty payload, Fed-Status:
// error, micro error headers) and reports the request as unplaced.
func (p *placement) fail(err error) {
	s, in := p.s, &p.inbound
	code := wire.CodeOf(err)
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
