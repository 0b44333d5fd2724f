package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// exchange is one HTTP request's trip through the mesh.
type exchange struct {
	s      *Service
	c      caller
	req    client.Request
	ctx    context.Context
	cancel context.CancelFunc
	ttft   time.Duration
}

// begin resolves routing for model/capability and opens the request's
// deadline. On error it has answered the HTTP request already and returns nil.
func (s *Service) begin(w http.ResponseWriter, r *http.Request, c caller, model, capability string) *exchange {
	if model != "" {
		if err := wire.ValidateID("model", model); err != nil {
			s.fail(w, c, client.Request{Model: model}, "", &wire.Error{Code: wire.CodeNotFound,
				Description: "model " + model + " does not exist: " + err.Error()})
			return nil
		}
	}
	req, timeout, err := routing(r, c.tenant, model, capability, s.cfg.Timeout)
	if err != nil {
		s.fail(w, c, req, "", err)
		return nil
	}
	w.Header().Set(hdrRequestID, req.RequestID)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	return &exchange{s: s, c: c, req: req, ctx: ctx, cancel: cancel}
}

// whole runs a non-streamed request with body as its payload: begin, then
// infer. On error it has answered already and returns nils; otherwise the
// caller owns x and must call x.cancel when done.
func (s *Service) whole(w http.ResponseWriter, r *http.Request, c caller, model, capability string, body []byte) (*exchange, *client.Response) {
	x := s.begin(w, r, c, model, capability)
	if x == nil {
		return nil, nil
	}
	x.req.Body = body
	resp := x.infer(w)
	if resp == nil {
		x.cancel()
		return nil, nil
	}
	return x, resp
}

// infer runs a non-streamed request; on error it has answered already.
func (x *exchange) infer(w http.ResponseWriter) *client.Response {
	resp, err := x.s.cl.Infer(x.ctx, x.req)
	if err != nil {
		x.s.fail(w, x.c, x.req, "", err)
		return nil
	}
	w.Header().Set(hdrNode, resp.Node)
	return resp
}

// ok records a successful request.
func (x *exchange) ok(status int, node string, tokens int) {
	x.cancel()
	x.s.metrics.observe(observation{endpoint: x.c.endpoint, model: x.req.Model, tenant: x.c.tenant.ID, node: node,
		status: status, tokens: tokens, elapsed: time.Since(x.c.start), ttft: x.ttft})
	x.s.log.Debug().Str("request_id", x.req.RequestID).Str("endpoint", x.c.endpoint).Str("tenant", x.c.tenant.ID).
		Str("model", x.req.Model).Str("node", node).Int("tokens", tokens).Dur("elapsed", time.Since(x.c.start)).Msg("request completed")
}

// fail answers with the OpenAI error for err and records it. node is the
// node that served it when known.
func (s *Service) fail(w http.ResponseWriter, c caller, req client.Request, node string, err error) {
	we := toWire(err, req.RequestID)
	if node == "" {
		node = we.Node
	}
	writeError(w, we)
	s.record(c, req, node, we, time.Duration(0))
}

func (s *Service) record(c caller, req client.Request, node string, we *wire.Error, ttft time.Duration) {
	s.metrics.observe(observation{endpoint: c.endpoint, model: req.Model, tenant: c.tenant.ID, node: node,
		status: kindOf(we.Code).status, code: we.Code, elapsed: time.Since(c.start), ttft: ttft})
	ev := s.log.Info()
	if we.Code >= 500 && we.Code != wire.CodeNoCapacity && we.Code != wire.CodeTimeout {
		ev = s.log.Warn()
	}
	ev.Str("request_id", req.RequestID).Str("endpoint", c.endpoint).Str("tenant", c.tenant.ID).Str("model", req.Model).
		Str("node", node).Int("code", we.Code).Str("error", we.Description).Msg("request failed")
}

// readBody reads a whole request body; too large is 413, a broken read 400.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &wire.Error{Code: http.StatusRequestEntityTooLarge,
				Description: "request body is larger than the gateway's limit"}
		}
		return nil, wire.Errorf(wire.CodeBadRequest, "read request body: %v", err)
	}
	return b, nil
}

// readJSON reads r's body and decodes it into v. On failure it answers the
// client (400, or the read error) and returns nil.
func (s *Service) readJSON(w http.ResponseWriter, r *http.Request, c caller, v any) []byte {
	body, err := readBody(r)
	if err != nil {
		s.fail(w, c, fallbackReq(r), "", err)
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		s.fail(w, c, fallbackReq(r), "", wire.Errorf(wire.CodeBadRequest, "request body is not a valid JSON object: %v", err))
		return nil
	}
	return body
}
