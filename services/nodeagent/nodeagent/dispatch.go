package nodeagent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/tracing"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Why a request's context ended, reported as its final error.
var (
	errCanceled = &wire.Error{Code: wire.CodeCanceled, Description: "canceled by the client"}
	// errWithdrawn ends a job a targeted cancel withdrew: outcome only, no final.
	errWithdrawn = &wire.Error{Code: wire.CodeCanceled, Description: "withdrawn: the request was placed elsewhere"}
	errDeadline  = &wire.Error{Code: wire.CodeTimeout, Description: "deadline passed before the answer was complete"}
	// errDrained mentions "draining" so health does not count it against the node.
	errDrained = &wire.Error{Code: wire.CodeNoCapacity, Description: "node draining: stopped before the request finished"}
	errLost    = &wire.Error{Code: wire.CodeInternal, Description: "could not send to the client"}
)

// startMicro starts the fed-node micro service (dispatch, probe, replay
// and status endpoints) unless it runs or stop closed it, and says whether
// it started it. On an error the half-built service stays in s.svc: stop
// (or the next stand-down) stops it.
func (s *Service) startMicro() (started bool, err error) {
	s.microMu.Lock()
	defer s.microMu.Unlock()
	if s.svc != nil || s.microClosed {
		return false, nil
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceNode,
		Version:     AgentVersion,
		Description: "fedmesh node agent " + s.cfg.NodeID,
		Metadata:    map[string]string{"node_id": s.cfg.NodeID, "region": s.cfg.Region, "backend": s.cfg.Backend.Name()},
		StatsHandler: func(*micro.Endpoint) any {
			return nodeStats{LateDispatches: s.lateDispatches.Load()}
		},
	})
	if err != nil {
		return false, fmt.Errorf("node %s: start micro service: %w", s.cfg.NodeID, err)
	}
	s.svc = svc
	// One dispatch endpoint per privacy level the node is cleared for: a
	// request of a higher level has no subject to reach it on (in secured
	// mode the credential allows no other, whatever a registration claims).
	for lvl := wire.PrivacyPublic; lvl <= s.cfg.Clearance; lvl++ {
		if err := svc.AddEndpoint("infer-"+lvl.String(), micro.HandlerFunc(s.handleInfer),
			micro.WithEndpointSubject(s.cfg.Subjects.NodeInferAt(s.cfg.NodeID, lvl.String()))); err != nil {
			return true, fmt.Errorf("node %s: add infer endpoint for %s: %w", s.cfg.NodeID, lvl, err)
		}
	}
	if err := svc.AddEndpoint("probe", micro.HandlerFunc(s.handleProbe),
		micro.WithEndpointSubject(s.cfg.Subjects.NodeProbe(s.cfg.NodeID))); err != nil {
		return true, fmt.Errorf("node %s: add probe endpoint: %w", s.cfg.NodeID, err)
	}
	if err := svc.AddEndpoint("replay", micro.HandlerFunc(s.handleReplay),
		micro.WithEndpointSubject(s.cfg.Subjects.NodeReplay(s.cfg.NodeID))); err != nil {
		return true, fmt.Errorf("node %s: add replay endpoint: %w", s.cfg.NodeID, err)
	}
	if err := svc.AddEndpoint("status", micro.HandlerFunc(s.handleStatus),
		micro.WithEndpointSubject(s.cfg.Subjects.NodeStatus(s.cfg.NodeID))); err != nil {
		return true, fmt.Errorf("node %s: add status endpoint: %w", s.cfg.NodeID, err)
	}
	return true, nil
}

// stopEndpointsLocked stops the micro service, so this instance no longer
// shares the node's subjects (micro's queue group) with the one that holds
// the id. Caller holds s.microMu.
func (s *Service) stopEndpointsLocked() {
	if s.svc == nil {
		return
	}
	s.dispatchedBefore += inferRequests(s.svc)
	if err := s.svc.Stop(); err != nil {
		s.log.Debug().Err(err).Msg("stop micro service")
	}
	s.svc = nil
}

// dispatched counts the dispatches the micro services of this instance
// took, across stand-downs.
func (s *Service) dispatched() float64 {
	s.microMu.Lock()
	defer s.microMu.Unlock()
	n := s.dispatchedBefore
	if s.svc != nil {
		n += inferRequests(s.svc)
	}
	return n
}

// inferRequests sums svc's dispatch endpoints (one per privacy level).
func inferRequests(svc micro.Service) float64 {
	var n float64
	for _, ep := range svc.Stats().Endpoints {
		if strings.HasPrefix(ep.Name, "infer-") {
			n += float64(ep.NumRequests)
		}
	}
	return n
}

// nodeStats is each endpoint's data in $SRV.STATS.fed-node.
type nodeStats struct {
	LateDispatches int64 `json:"late_dispatches"`
}

// handleInfer runs in the subscription callback: it only decodes, takes a
// slot and answers; the backend runs on a goroutine of the work group.
func (s *Service) handleInfer(req micro.Request) {
	h := nats.Header(req.Headers())
	late, werr := ackDeadlinePassed(h, time.Now())
	if werr != nil {
		s.refuse(req, werr)
		return
	}
	if late {
		// The router stopped waiting for the ack and may have placed the
		// request elsewhere: starting it here could give the client two
		// answers, and an answer to the router is read by nobody.
		n := s.lateDispatches.Add(1)
		s.log.Debug().Str(logging.KeyRequest, h.Get(wire.HdrRequestID)).Str("ack_deadline", h.Get(wire.HdrAckDeadline)).
			Int64("late_dispatches", n).Msg("dispatch arrived after its ack deadline: not started")
		return
	}
	j, werr := s.decode(req)
	if werr != nil {
		s.refuse(req, werr)
		return
	}
	st, inFlight := s.admit(j)
	if st != wire.StatusAccepted {
		j.cancel(nil)
		_ = req.Respond(nil, s.ackHeaders(st, inFlight))
		return
	}
	if s.atOnce(j, h, req.Reply()) {
		// A backend that never blocks answers here, on the subscription's
		// goroutine (a goroutine hand-off cost more than the answer), and
		// the ack goes after the final, saying done (DESIGN §4). Counted
		// in the work group all the same, so a drain waits for it.
		if !s.work.Do(func(context.Context) { s.run(j) }) {
			s.release(j)
			j.cancel(nil)
			_ = req.Respond(nil, s.ackHeaders(wire.StatusDraining, inFlight))
		}
		return
	}
	// The job's goroutine joins the work group before the accept goes out:
	// once the router has the accept, a drain waits for the job (a Stop
	// between the accept and the goroutine's start cut accepted requests
	// with errDrained). It runs only once the accept is out.
	acked := make(chan bool, 1)
	if !s.work.Go(func(context.Context) {
		if <-acked {
			s.run(j)
		}
	}) {
		// Stopping already: not accepted, so the router places it elsewhere.
		s.release(j)
		j.cancel(nil)
		_ = req.Respond(nil, s.ackHeaders(wire.StatusDraining, inFlight))
		return
	}
	if err := req.Respond(nil, s.ackHeaders(wire.StatusAccepted, inFlight)); err != nil {
		// The router never heard the accept: it retries elsewhere, so
		// this node must not answer too.
		s.log.Warn().Err(err).Str(logging.KeyRequest, j.call.RequestID).Msg("accept not sent, dropping request")
		s.release(j)
		j.cancel(nil)
		acked <- false
		return
	}
	acked <- true
}

// atOnce reports whether j is answered where its dispatch arrived and
// acked done after its final (DESIGN §4): the router said it reads a done
// ack (Fed-Ack-Done), the backend never blocks, the answer is whole (a
// stream's chunks go as they come) and its body came inline (a body in
// fed_blobs is a fetch). It then notes the ack's subject and deadline in j.
func (s *Service) atOnce(j *job, h nats.Header, reply string) bool {
	if reply == "" || j.call.Stream || j.bodyOut || h.Get(wire.HdrAckDone) != "true" || !backend.AnswersAtOnce(s.cfg.Backend) {
		return false
	}
	ms, err := strconv.ParseInt(h.Get(wire.HdrAckDeadline), 10, 64)
	if err != nil || ms <= 0 { // none: nothing bounds when the router stops waiting
		return false
	}
	j.ackTo, j.ackBy = reply, time.UnixMilli(ms)
	return true
}

// refuse answers a dispatch with the error werr (a micro error naming the
// header at fault); nothing goes to the client.
func (s *Service) refuse(req micro.Request, werr *wire.Error) {
	werr.Node = s.cfg.NodeID
	s.log.Debug().Str(logging.KeyRequest, werr.RequestID).Int("code", werr.Code).Str("error", werr.Description).Msg("dispatch refused")
	if err := wire.RespondError(s.nc, req.Reply(), werr); err != nil {
		s.log.Debug().Err(err).Str(logging.KeyRequest, werr.RequestID).Msg("refusal not sent")
	}
}

// ackHeaders are the headers of a dispatch ack: the status and, on
// accepted and busy, the node's load (in flight after this admission, and
// its limit, and the model server's own load while a scrape is fresh), so
// the router learns it at once, not at the next heartbeat.
func (s *Service) ackHeaders(st string, inFlight int) micro.RespondOpt {
	return micro.WithHeaders(micro.Headers(s.ackHeader(st, inFlight)))
}

// ackHeader is ackHeaders as a message's header.
func (s *Service) ackHeader(st string, inFlight int) nats.Header {
	h := nats.Header{wire.HdrStatus: []string{st}}
	if st == wire.StatusAccepted || st == wire.StatusBusy {
		h[wire.HdrInFlight] = []string{strconv.Itoa(inFlight)}
		h[wire.HdrMaxConcurrency] = []string{strconv.Itoa(s.cfg.MaxConcurrency)}
		if v, ok := s.load.header(time.Now()); ok { // only a fresh scrape
			h[hdrServerLoad] = []string{v}
		}
	}
	return h
}

// ackDeadlinePassed reports whether the dispatch's Fed-Ack-Deadline (Unix
// ms) is at or before now; a dispatch without the header is never late. A
// value that is not positive Unix milliseconds is a 400 naming the header.
func ackDeadlinePassed(h nats.Header, now time.Time) (bool, *wire.Error) {
	v := h.Get(wire.HdrAckDeadline)
	if v == "" {
		return false, nil
	}
	unixMs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || unixMs <= 0 {
		e := wire.Errorf(wire.CodeBadRequest, "header %s %q is not Unix milliseconds", wire.HdrAckDeadline, v)
		e.RequestID = h.Get(wire.HdrRequestID)
		return false, e
	}
	return now.UnixMilli() >= unixMs, nil
}

// decode reads a dispatch; every refusal names the header at fault.
func (s *Service) decode(req micro.Request) (*job, *wire.Error) {
	h := nats.Header(req.Headers())
	id := h.Get(wire.HdrRequestID)
	bad := func(code int, format string, args ...any) (*job, *wire.Error) {
		e := wire.Errorf(code, format, args...)
		e.RequestID = id
		return nil, e
	}
	if id == "" {
		return bad(wire.CodeBadRequest, "header %s is missing", wire.HdrRequestID)
	}
	if len(id) > wire.MaxRequestIDLen {
		return bad(wire.CodeBadRequest, "header %s is longer than %d bytes", wire.HdrRequestID, wire.MaxRequestIDLen)
	}
	inbox := h.Get(wire.HdrReplyTo)
	if inbox == "" || strings.ContainsAny(inbox, " \t\r\n*>") {
		return bad(wire.CodeBadRequest, "header %s %q is not a reply subject", wire.HdrReplyTo, inbox)
	}
	spec, err := wire.ParseSpec(h)
	if err != nil {
		e, _ := err.(*wire.Error)
		if e == nil {
			e = wire.Errorf(wire.CodeBadRequest, "%v", err)
		}
		e.RequestID = id
		return nil, e
	}
	model, capability, werr := s.target(h.Get(wire.HdrCapability), spec)
	if werr != nil {
		werr.RequestID = id
		return nil, werr
	}
	now := time.Now()
	deadline, werr := deadlineOf(h, spec, now)
	if werr != nil {
		werr.RequestID = id
		return nil, werr
	}
	var cont *backend.Continuation
	if spec.ContinueSeq > 0 {
		if !backend.Continues(s.cfg.Backend) {
			return bad(wire.CodeBadRequest, "node %s cannot continue an answer (%s): its %s backend does not support it",
				s.cfg.NodeID, wire.HdrContinueSeq, s.cfg.Backend.Name())
		}
		text, err := wire.ParseContinueText(h.Get(wire.HdrContinueText))
		if err != nil {
			e, _ := err.(*wire.Error)
			e.RequestID = id
			return nil, e
		}
		cont = &backend.Continuation{Seq: spec.ContinueSeq, Text: text}
	}
	attempt, _ := strconv.Atoi(h.Get(wire.HdrAttempt))
	// Derived from the work group's context: a drain that times out (or a
	// closed connection) cuts the job with errDrained.
	ctx, cancel := context.WithCancelCause(s.work.Context())
	ctx, stopDeadline := context.WithDeadlineCause(ctx, deadline, errDeadline)
	var span tracing.Span
	if tracing.Enabled() { // a child of the router's attempt span; the backend's HTTP request carries it on
		ctx, span = tracing.Start(tracing.Extract(ctx, h), "fedmesh.infer "+capability, tracing.Server,
			tracing.KeyRequest.String(id), tracing.KeyNode.String(s.cfg.NodeID), tracing.KeyCapability.String(capability),
			tracing.KeyModel.String(model), tracing.KeyAttempt.Int(attempt))
	}
	j := &job{span: span, cancelKey: h.Get(wire.HdrCancelKey),
		call: backend.Call{RequestID: id, Capability: capability, Model: model, Body: req.Data(),
			Params: []byte(h.Get(wire.HdrParams)), Stream: spec.Stream, Continue: cont},
		// A takeover of a lost node's request says so on every message.
		reply:  wire.Reply{Inbox: inbox, RequestID: id, Node: s.cfg.NodeID, Takeover: h.Get(wire.HdrTakeover)},
		tenant: spec.Tenant, attempt: attempt, routeScore: h.Get(wire.HdrRouteScore), budget: spec.Timeout,
		start: now, ctx: ctx,
	}
	j.cancel = func(cause error) { cancel(cause); stopDeadline() }
	// A bad body reference is the request's final 400, not a refusal: the
	// router does not read these headers, so every node would refuse alike.
	j.body, j.bodyOut, j.bodyErr = blobs.BodyRef(h)
	if j.bodyOut && len(req.Data()) > 0 {
		j.bodyErr = wire.Errorf(wire.CodeBadRequest, "request has both a body and header %s", blobs.HdrBody)
	}
	j.acceptBlob = h.Get(blobs.HdrAccept) == "true"
	if cont != nil {
		j.reply.StartAt(cont.Seq) // the client has chunks 0…Seq-1
	}
	return j, nil
}

// target is the model and capability a dispatch asks for, if this node
// serves them at the request's privacy level.
func (s *Service) target(capability string, spec wire.Spec) (string, string, *wire.Error) {
	if capability != "" {
		if err := wire.ValidateCapability(capability); err != nil {
			return "", "", wire.Errorf(wire.CodeBadRequest, "header %s: %v", wire.HdrCapability, err)
		}
	}
	model, capability, ok := s.pick(spec.Model, capability)
	if !ok {
		if spec.Model != "" {
			return "", "", wire.Errorf(wire.CodeNotFound, "node %s does not serve model %q with capability %q", s.cfg.NodeID, spec.Model, capability)
		}
		return "", "", wire.Errorf(wire.CodeNotFound, "node %s serves no model with capability %q", s.cfg.NodeID, capability)
	}
	if !s.cfg.Clearance.Allows(spec.Privacy) {
		return "", "", wire.Errorf(wire.CodePrivacy, "node %s is cleared for %s data, the request is %s", s.cfg.NodeID, s.cfg.Clearance, spec.Privacy)
	}
	return model, capability, nil
}

// deadlineOf is the request's deadline: Fed-Deadline (absolute), else the
// spec's timeout from now.
func deadlineOf(h nats.Header, spec wire.Spec, now time.Time) (time.Time, *wire.Error) {
	v := h.Get(wire.HdrDeadline)
	if v == "" {
		return now.Add(spec.EffectiveTimeout()), nil
	}
	unixMs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || unixMs <= 0 {
		return time.Time{}, wire.Errorf(wire.CodeBadRequest, "header %s %q is not Unix milliseconds", wire.HdrDeadline, v)
	}
	return time.UnixMilli(unixMs), nil
}

// pick chooses the model and capability: the named model (it must serve the
// capability), else the first model serving the capability. A dispatch with
// no capability takes the model's first one.
func (s *Service) pick(model, capability string) (string, string, bool) {
	for i := range s.cfg.Models {
		m := &s.cfg.Models[i]
		if model != "" && m.ModelID != model {
			continue
		}
		if capability == "" {
			return m.ModelID, m.Capabilities[0], true
		}
		if m.Serves(capability) {
			return m.ModelID, capability, true
		}
	}
	return "", capability, false
}

// admit takes a concurrency slot for j, or says why not; it also returns
// the requests in flight after the admission, for the ack.
func (s *Service) admit(j *job) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining || !s.serving:
		return wire.StatusDraining, s.active
	case s.active >= s.cfg.MaxConcurrency:
		return wire.StatusBusy, s.active
	}
	s.active++
	s.waiting++
	s.jobs[j.call.RequestID] = append(s.jobs[j.call.RequestID], j)
	if s.early.take(j.call.RequestID, j.cancelKey) {
		// Accepted all the same: refusing would make the router try
		// another node, which the client has told to stop as well.
		j.cancel(errCanceled)
	}
	return wire.StatusAccepted, s.active
}

// release gives j's slot back.
func (s *Service) release(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[j.call.RequestID]
	for i, x := range js {
		if x == j {
			js = append(js[:i], js[i+1:]...)
			break
		}
	}
	if len(js) == 0 {
		delete(s.jobs, j.call.RequestID)
	} else {
		s.jobs[j.call.RequestID] = js
	}
	s.active--
	if !j.started {
		s.waiting--
	}
}

// onCancel handles fed.cancel.<request_id>: it ends that request's context;
// the job then sends the final 499. A cancel whose Fed-Node names another
// node (a router taking back one attempt) is none of this node's business:
// it is neither acted on nor remembered.
func (s *Service) onCancel(m *nats.Msg) {
	target := m.Header.Get(wire.HdrNode)
	if target != "" && target != s.cfg.NodeID {
		return
	}
	// A cancel aimed at this node withdraws the attempt: a router gave up
	// on its ack, or the client already has another node's answer. The job
	// ends without a word to the client, which must see one final only.
	// Such a cancel is not remembered: a dispatch arriving after it is past
	// its ack deadline and is never started anyway.
	why := errCanceled
	if target != "" {
		why = errWithdrawn
	}
	id := strings.TrimPrefix(m.Subject, s.cfg.Subjects.Cancel(""))
	// The request's cancel secret (DESIGN §3.4): a cancel without the key
	// the dispatch carried is someone who saw only the request id. A
	// withdrawal carries the key's digest for this node (wire.WithdrawKey),
	// which is no use to cancel the request anywhere else.
	key := m.Header.Get(wire.HdrCancelKey)
	s.mu.Lock()
	js := s.jobs[id]
	hit := 0
	for _, j := range js {
		if j.cancelKey == key || (target != "" && key == wire.WithdrawKey(j.cancelKey, s.cfg.NodeID)) {
			j.cancel(why)
			hit++
		}
	}
	if len(js) == 0 && target == "" && len(key) <= wire.MaxCancelKeyLen {
		s.early.remember(id, key, time.Now())
	}
	s.mu.Unlock()
	switch {
	case hit > 0:
		s.log.Debug().Str(logging.KeyRequest, id).Msg("canceled by client")
	case len(js) > 0:
		s.badCancels.Add(1)
		s.log.Debug().Str(logging.KeyRequest, id).Msg("cancel without the request's cancel key ignored")
	}
}

// probeAnswer is the body of a probe reply.
type probeAnswer struct {
	NodeID         string `json:"node_id"`
	Status         string `json:"status"` // ok or draining
	InFlight       int    `json:"in_flight"`
	MaxConcurrency int    `json:"max_concurrency"`
	Backend        string `json:"backend"`
	// LateDispatches counts dispatches that arrived after their
	// Fed-Ack-Deadline and were dropped unstarted.
	LateDispatches int64 `json:"late_dispatches"`
}

// handleProbe answers health's active probe from memory, never blocking.
func (s *Service) handleProbe(req micro.Request) {
	s.mu.Lock()
	a := probeAnswer{NodeID: s.cfg.NodeID, Status: "ok", InFlight: s.active, MaxConcurrency: s.cfg.MaxConcurrency,
		Backend: s.cfg.Backend.Name(), LateDispatches: s.lateDispatches.Load()}
	if s.draining || !s.serving {
		a.Status = wire.StatusDraining
	}
	s.mu.Unlock()
	_ = req.RespondJSON(a)
}
