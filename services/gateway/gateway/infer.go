package gateway

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/tracing"
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
		if err := modelError(model); err != nil {
			s.fail(w, c, client.Request{RequestID: c.requestID, Model: model}, "", err)
			return nil
		}
	}
	req, timeout, err := routing(r, c.tenant, c.requestID, model, capability, s.cfg.Timeout)
	if err != nil {
		s.fail(w, c, req, "", err)
		return nil
	}
	w.Header().Set(hdrRequestID, req.RequestID)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	if tracing.Enabled() {
		// the caller's traceparent (if any) is the parent; the mesh request
		// carries this span on to the router and the node
		var span tracing.Span
		ctx, span = tracing.Start(tracing.ExtractHTTP(ctx, propagation.HeaderCarrier(r.Header)), "fedmesh.gateway "+capability,
			tracing.Server, tracing.KeyRequest.String(req.RequestID), tracing.KeyCapability.String(capability),
			tracing.KeyModel.String(model), tracing.KeyTenant.String(c.tenant.ID))
		tracing.Inject(ctx, req.Header)
		end := cancel
		cancel = func() { end(); span.End() }
	}
	return &exchange{s: s, c: c, req: req, ctx: ctx, cancel: cancel}
}

// modelError is the 404 of a model id no node can have (DESIGN §2 ids);
// the caller's own string, clipped (it may be the whole body long).
func modelError(model string) error {
	if len(model) > wire.MaxIDLen {
		return invalid(wire.CodeNotFound, "model %s does not exist: longer than %d characters", clip(model, 32), wire.MaxIDLen)
	}
	if err := wire.ValidateID("model", model); err != nil {
		return invalid(wire.CodeNotFound, "model %s does not exist: %v", model, err)
	}
	return nil
}

// modelRequest is what the gateway reads of a pass-through JSON body: the
// model to route by. The body itself goes to the node unchanged.
type modelRequest struct {
	Model string `json:"model"`
}

func (m *modelRequest) model() string { return m.Model }

// validate accepts any body that is JSON; requests with more rules override it.
func (m *modelRequest) validate() error { return nil }

// jsonRequest is a pass-through body as the gateway decodes it.
type jsonRequest interface {
	model() string
	// validate checks the fields the gateway reads; its error is a 400.
	validate() error
}

// receiveJSON reads r's JSON body into v, checks it and opens its exchange
// (the body in x.req, which deletes a stored one when it ends). On error it
// has answered the client and returns nil.
func (s *Service) receiveJSON(w http.ResponseWriter, r *http.Request, c caller, capability string, v jsonRequest) *exchange {
	body, err := s.readJSON(r, c, v)
	if err == nil {
		if err = v.validate(); err != nil {
			body.discard()
		}
	}
	if err != nil {
		s.fail(w, c, c.request(), "", err)
		return nil
	}
	x := s.begin(w, r, c, v.model(), capability)
	if x == nil {
		body.discard()
		return nil
	}
	body.into(&x.req)
	return x
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

// relayAnswer runs a whole request and writes its answer to the client as
// it is read (client.InferAnswer): headers from the final, Content-Length
// its size, then the bytes, from fed_blobs a segment at a time when large.
// An error before the first byte is the usual error answer; after it the
// status is out, so the connection is cut and the client sees a body
// shorter than its Content-Length.
func (x *exchange) relayAnswer(w http.ResponseWriter, contentType func(*client.Response) string) {
	out := &countingWriter{w: w}
	resp, err := x.s.cl.InferAnswer(x.ctx, x.req, func(resp *client.Response) (io.Writer, error) {
		h := w.Header()
		h.Set(hdrNode, resp.Node)
		h.Set("Content-Type", contentType(resp))
		if resp.Size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(resp.Size, 10))
		}
		return out, nil
	})
	switch {
	case err == nil:
		x.ok(http.StatusOK, resp.Node, resp.Tokens)
	case out.n == 0 && out.err == nil:
		w.Header().Del("Content-Length")
		x.s.fail(w, x.c, x.req, "", err)
	case out.err != nil: // the client is gone
		x.s.record(x.c, x.req, w.Header().Get(hdrNode), &wire.Error{Code: wire.CodeCanceled, RequestID: x.req.RequestID,
			Description: "write to client: " + out.err.Error()}, 0)
	default:
		f := classify(err, x.c.requestID)
		x.s.record(x.c, x.req, w.Header().Get(hdrNode), f.Error, 0)
		panic(http.ErrAbortHandler) // the server closes the connection without a log line
	}
}

// countingWriter counts what reached w, and keeps w's error.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// ok ends a successful request (see done).
func (x *exchange) ok(status int, node string, tokens int) {
	x.cancel()
	x.s.done(observation{endpoint: x.c.endpoint, model: x.req.Model, tenant: x.c.tenant.ID, node: node,
		status: status, tokens: tokens, elapsed: time.Since(x.c.start), ttft: x.ttft}, x.req.RequestID, nil)
}

// answerJSON writes body, a JSON answer built from resp, and records success.
func (x *exchange) answerJSON(w http.ResponseWriter, resp *client.Response, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
	x.ok(http.StatusOK, resp.Node, resp.Tokens)
}

// badOutput answers 500 for a node's answer the gateway cannot pass on.
func (x *exchange) badOutput(w http.ResponseWriter, resp *client.Response, description string) {
	x.s.fail(w, x.c, x.req, resp.Node, &wire.Error{Code: wire.CodeInternal, RequestID: x.req.RequestID, Node: resp.Node,
		Description: description})
}

// fail answers with the OpenAI error for err and records it. node is the
// node that served it when known. The caller sees a generic text unless
// err is a publicError; the access log gets the whole description.
func (s *Service) fail(w http.ResponseWriter, c caller, req client.Request, node string, err error) {
	f := classify(err, c.requestID)
	if node == "" {
		node = f.Node
	}
	s.writeError(w, f, req.Model)
	s.record(c, req, node, f.Error, 0)
}

// record ends a failed request (see done).
func (s *Service) record(c caller, req client.Request, node string, we *wire.Error, ttft time.Duration) {
	s.done(observation{endpoint: c.endpoint, model: req.Model, tenant: c.tenant.ID, node: node,
		status: kindOf(we.Code).status, code: we.Code, elapsed: time.Since(c.start), ttft: ttft}, c.requestID, we)
}
