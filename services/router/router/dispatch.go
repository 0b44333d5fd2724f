package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

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
		s.log.Warn().Str("subject", m.Subject).Str("request", m.Header.Get(wire.HdrRequestID)).
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
	if !s.track() {
		<-s.sem
		_ = s.nc.PublishMsg(rep.Fail(wire.CodeNoCapacity, "router stopping: request not placed, send it again"))
		return
	}
	go func() {
		defer s.reqWG.Done()
		defer func() { <-s.sem }()
		s.route(m)
	}()
}

// placement is one request being placed.
type placement struct {
	s        *Service
	msg      *nats.Msg
	mreq     Request
	attempts int
	failures []string
}

// route places one request: decide, dispatch, retry on another node.
func (s *Service) route(m *nats.Msg) {
	p := &placement{s: s, msg: m, mreq: Request{Header: m.Header, Received: time.Now()}}
	p.mreq.ID = m.Header.Get(wire.HdrRequestID)
	capability := s.cfg.Subjects.CapabilityOf(m.Subject)
	p.mreq.Capability = capability
	if err := wire.ValidateCapability(capability); err != nil {
		p.fail(wire.Errorf(wire.CodeNotFound, "capability %q: %v", capability, err))
		return
	}
	spec, err := wire.ParseSpec(m.Header)
	if err != nil {
		p.fail(err)
		return
	}
	if spec.RequestID == "" {
		spec.RequestID = nuid.Next()
	}
	p.mreq.ID, p.mreq.Spec = spec.RequestID, spec
	for _, mw := range s.mw {
		if err := mw.BeforeRoute(s.ctx, &p.mreq); err != nil {
			p.fail(err)
			return
		}
	}
	deadline := p.mreq.Received.Add(spec.EffectiveTimeout())
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()

	r := newRequest(capability, &spec, s.cfg.Region)
	for {
		pol := s.policy.Load()
		d := s.cache.decide(&r, pol, s.rr.Add(1))
		if d.e == nil {
			p.fail(p.noNodeError(&r, pol, &d))
			return
		}
		if d.halfOpen && !d.e.probing.CompareAndSwap(false, true) {
			// another request took the half-open node's one probe slot meanwhile
			r.tried = append(r.tried, d.e)
			continue
		}
		p.attempts++
		// counted before the ack: the node may finish (and its completion
		// outcome arrive) before RequestMsg returns here
		s.out.add(spec.RequestID, d.e, deadline.Add(s.cfg.OutstandingTTL), d.halfOpen)
		why, err := s.dispatch(ctx, p, &d, deadline)
		if err == nil {
			s.stats.placed.Add(1)
			res := Result{Node: d.e.id, Model: d.model, Attempts: p.attempts, Score: d.total}
			for _, mw := range s.mw {
				mw.AfterDispatch(&p.mreq, &res)
			}
			return
		}
		s.out.done(spec.RequestID, d.e.id) // also frees a half-open probe slot
		if ctx.Err() != nil {
			p.fail(p.contextError(ctx))
			return
		}
		p.failures = append(p.failures, d.e.id+": "+why)
		s.publishDispatchFailed(&spec, capability, &d, p.attempts, why)
		r.tried = append(r.tried, d.e)
		if p.attempts > pol.MaxRetries {
			p.fail(wire.Errorf(wire.CodeNoCapacity, "no capacity for %s: all %d attempts failed (%s)",
				capability, p.attempts, strings.Join(p.failures, "; ")))
			return
		}
		s.stats.retries.Add(1)
		s.log.Debug().Str("request", spec.RequestID).Str("node", d.e.id).Str("why", why).Int("attempt", p.attempts).
			Str("state", "retrying").Msg("dispatch failed, retrying on another node")
		t := time.NewTimer(time.Duration(pol.RetryDelayMs*p.attempts) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			p.fail(p.contextError(ctx))
			return
		case <-t.C:
		}
	}
}

// dispatch hands the request to the chosen node and waits for its ack. It
// returns nil when the node accepted, else why it did not.
func (s *Service) dispatch(ctx context.Context, p *placement, d *decision, deadline time.Time) (string, error) {
	subj := d.subject
	if subj == "" {
		subj = s.cfg.Subjects.NodeInfer(d.e.id)
	}
	h := make(nats.Header, len(p.msg.Header)+8)
	for k, v := range p.msg.Header {
		h[k] = v
	}
	spec := &p.mreq.Spec
	h.Set(wire.HdrRequestID, spec.RequestID)
	h.Set(wire.HdrReplyTo, p.msg.Reply)
	h.Set(wire.HdrAttempt, strconv.Itoa(p.attempts))
	h.Set(wire.HdrRouteScore, strconv.FormatFloat(d.total, 'f', 3, 64))
	h.Set(wire.HdrDeadline, strconv.FormatInt(deadline.UnixMilli(), 10))
	h.Set(wire.HdrCapability, p.mreq.Capability)
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
	b, err := json.Marshal(ev)
	if err == nil {
		err = s.nc.Publish(s.cfg.Subjects.Outcome(d.e.id), b)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("node", d.e.id).Str("request", spec.RequestID).Msg("publish dispatch_failed outcome")
	}
}

func (p *placement) contextError(ctx context.Context) error {
	if p.s.ctx.Err() != nil {
		return wire.Errorf(wire.CodeNoCapacity, "router shutting down after %d attempts", p.attempts)
	}
	return wire.Errorf(wire.CodeTimeout, "deadline passed while placing the request after %d attempts", p.attempts)
}

// noNodeError explains a decision that found no node, or the end of the
// retries when every remaining candidate was tried.
func (p *placement) noNodeError(r *request, pol *policyState, d *decision) error {
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
		if r.q.regions != nil {
			msg += " in regions " + strings.Join(r.q.regions, ",")
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
	s := p.s
	code := wire.CodeOf(err)
	desc := err.Error()
	var we *wire.Error
	if errors.As(err, &we) {
		desc = we.Description
	}
	rep := wire.Reply{Inbox: p.msg.Reply, RequestID: p.mreq.ID}
	m := rep.Fail(code, desc)
	if p.attempts > 0 {
		m.Header.Set(wire.HdrAttempts, strconv.Itoa(p.attempts))
	}
	if perr := s.nc.PublishMsg(m); perr != nil {
		s.log.Warn().Err(perr).Str("request", p.mreq.ID).Msg("publish final error to client")
	}
	s.stats.unplaced.Add(1)
	ev := record.Unplaced{RequestID: p.mreq.ID, Capability: p.mreq.Capability, Model: p.mreq.Spec.Model,
		Tenant: p.mreq.Spec.Tenant, Code: code, Error: desc, Attempts: p.attempts, Time: time.Now()}
	if b, jerr := json.Marshal(ev); jerr == nil {
		_ = s.nc.Publish(s.cfg.Subjects.Unplaced(), b)
	}
	werr := &wire.Error{Code: code, Description: desc, RequestID: p.mreq.ID}
	for _, mw := range s.mw {
		mw.OnError(&p.mreq, werr)
	}
}
