package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Why a request's context ended, reported as its final error.
var (
	errCanceled = &wire.Error{Code: wire.CodeCanceled, Description: "canceled by the client"}
	errDeadline = &wire.Error{Code: wire.CodeTimeout, Description: "deadline passed before the answer was complete"}
	// errDrained mentions "draining" so health does not count it against the node.
	errDrained = &wire.Error{Code: wire.CodeNoCapacity, Description: "node draining: stopped before the request finished"}
	errLost    = &wire.Error{Code: wire.CodeInternal, Description: "could not send to the client"}
)

func (s *Service) startMicro() error {
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        subject.ServiceNode,
		Version:     AgentVersion,
		Description: "fedmesh node agent " + s.cfg.NodeID,
		Metadata:    map[string]string{"node_id": s.cfg.NodeID, "region": s.cfg.Region, "backend": s.cfg.Backend.Name()},
	})
	if err != nil {
		return fmt.Errorf("nodeagent %s: start micro service: %w", s.cfg.NodeID, err)
	}
	s.svc = svc
	if err := svc.AddEndpoint("infer", micro.HandlerFunc(s.handleInfer),
		micro.WithEndpointSubject(s.cfg.Subjects.NodeInfer(s.cfg.NodeID))); err != nil {
		_ = svc.Stop()
		return fmt.Errorf("nodeagent %s: add infer endpoint: %w", s.cfg.NodeID, err)
	}
	if err := svc.AddEndpoint("probe", micro.HandlerFunc(s.handleProbe),
		micro.WithEndpointSubject(s.cfg.Subjects.NodeProbe(s.cfg.NodeID))); err != nil {
		_ = svc.Stop()
		return fmt.Errorf("nodeagent %s: add probe endpoint: %w", s.cfg.NodeID, err)
	}
	return nil
}

func status(st string) micro.RespondOpt {
	return micro.WithHeaders(micro.Headers{wire.HdrStatus: []string{st}})
}

func refuse(req micro.Request, err *wire.Error) {
	_ = req.Error(strconv.Itoa(err.Code), err.Description, nil, status(wire.StatusError))
}

// handleInfer runs in the subscription callback: it only decodes, takes a
// slot and answers; the backend runs on a goroutine the Service owns.
func (s *Service) handleInfer(req micro.Request) {
	j, werr := s.decode(req)
	if werr != nil {
		werr.Node = s.cfg.NodeID
		s.log.Debug().Str("request", werr.RequestID).Int("code", werr.Code).Str("error", werr.Description).Msg("dispatch refused")
		refuse(req, werr)
		return
	}
	if st := s.admit(j); st != wire.StatusAccepted {
		j.cancel(nil)
		_ = req.Respond(nil, status(st))
		return
	}
	if err := req.Respond(nil, status(wire.StatusAccepted)); err != nil {
		// The router never hears the accept: it retries elsewhere, so this
		// node must not answer too.
		s.log.Warn().Err(err).Str("request", j.req.RequestID).Msg("accept not sent, dropping request")
		s.release(j)
		j.cancel(nil)
		return
	}
	go s.run(j)
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
	if len(id) > 256 {
		return bad(wire.CodeBadRequest, "header %s is longer than 256 bytes", wire.HdrRequestID)
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
	capability := h.Get(wire.HdrCapability)
	if capability != "" {
		if err := wire.ValidateCapability(capability); err != nil {
			return bad(wire.CodeBadRequest, "header %s: %v", wire.HdrCapability, err)
		}
	}
	model, capability, ok := s.pick(spec.Model, capability)
	if !ok {
		if spec.Model != "" {
			return bad(wire.CodeNotFound, "node %s does not serve model %q with capability %q", s.cfg.NodeID, spec.Model, capability)
		}
		return bad(wire.CodeNotFound, "node %s serves no model with capability %q", s.cfg.NodeID, capability)
	}
	if !s.cfg.Clearance.Allows(spec.Privacy) {
		return bad(wire.CodePrivacy, "node %s is cleared for %s data, the request is %s", s.cfg.NodeID, s.cfg.Clearance, spec.Privacy)
	}
	now := time.Now()
	deadline := now.Add(spec.EffectiveTimeout())
	if v := h.Get(wire.HdrDeadline); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return bad(wire.CodeBadRequest, "header %s %q is not Unix milliseconds", wire.HdrDeadline, v)
		}
		deadline = time.UnixMilli(ms)
	}
	attempt, _ := strconv.Atoi(h.Get(wire.HdrAttempt))
	ctx, cancel := context.WithCancelCause(context.Background())
	ctx, stopDeadline := context.WithDeadlineCause(ctx, deadline, errDeadline)
	j := &job{
		req: backend.Request{RequestID: id, Capability: capability, Model: model, Body: req.Data(),
			Params: []byte(h.Get(wire.HdrParams)), Stream: spec.Stream},
		reply:  wire.Reply{Inbox: inbox, RequestID: id, Node: s.cfg.NodeID},
		tenant: spec.Tenant, attempt: attempt, routeScore: h.Get(wire.HdrRouteScore),
		start: now, ctx: ctx,
	}
	j.cancel = func(cause error) { cancel(cause); stopDeadline() }
	return j, nil
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

// admit takes a concurrency slot for j, or says why not.
func (s *Service) admit(j *job) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return wire.StatusDraining
	case s.active >= s.cfg.MaxConcurrency:
		return wire.StatusBusy
	}
	s.active++
	s.waiting++
	s.jobs[j.req.RequestID] = append(s.jobs[j.req.RequestID], j)
	s.work.Add(1)
	if s.early.take(j.req.RequestID) {
		// Accepted all the same: refusing would make the router try
		// another node, which the client has told to stop as well.
		j.cancel(errCanceled)
	}
	return wire.StatusAccepted
}

// release gives j's slot back.
func (s *Service) release(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[j.req.RequestID]
	for i, x := range js {
		if x == j {
			js = append(js[:i], js[i+1:]...)
			break
		}
	}
	if len(js) == 0 {
		delete(s.jobs, j.req.RequestID)
	} else {
		s.jobs[j.req.RequestID] = js
	}
	s.active--
	if !j.started {
		s.waiting--
	}
	if s.active == 0 && s.draining {
		close(s.idle)
		s.idle = make(chan struct{})
	}
	s.work.Done()
}

// onCancel handles fed.cancel.<request_id>: it ends that request's context;
// the job then sends the final 499.
func (s *Service) onCancel(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, s.cfg.Subjects.Cancel(""))
	s.mu.Lock()
	js := s.jobs[id]
	for _, j := range js {
		j.cancel(errCanceled)
	}
	if len(js) == 0 {
		s.early.remember(id, time.Now())
	}
	s.mu.Unlock()
	if len(js) > 0 {
		s.log.Debug().Str("request", id).Msg("canceled by client")
	}
}

// probeAnswer is the body of a probe reply.
type probeAnswer struct {
	NodeID         string `json:"node_id"`
	Status         string `json:"status"` // ok or draining
	InFlight       int    `json:"in_flight"`
	MaxConcurrency int    `json:"max_concurrency"`
	Backend        string `json:"backend"`
}

// handleProbe answers health's active probe from memory, never blocking.
func (s *Service) handleProbe(req micro.Request) {
	s.mu.Lock()
	a := probeAnswer{NodeID: s.cfg.NodeID, Status: "ok", InFlight: s.active, MaxConcurrency: s.cfg.MaxConcurrency,
		Backend: s.cfg.Backend.Name()}
	if s.draining {
		a.Status = wire.StatusDraining
	}
	s.mu.Unlock()
	_ = req.RespondJSON(a)
}

// outcome publishes a finished request's event for health.
func (s *Service) outcome(o record.Outcome) {
	b, err := json.Marshal(o)
	if err == nil {
		err = s.nc.Publish(s.cfg.Subjects.Outcome(s.cfg.NodeID), b)
	}
	if err != nil && !s.nc.IsClosed() {
		s.log.Warn().Err(err).Str("request", o.RequestID).Msg("publish outcome")
	}
}
