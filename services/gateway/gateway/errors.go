package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"unicode/utf8"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// apiError is the OpenAI error body: {"error":{"message","type","code"}}.
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// errorKind is the OpenAI type and code for a fedmesh error code.
type errorKind struct {
	status int
	typ    string
	code   string
}

// errorKinds maps a wire code to the HTTP status and OpenAI error type/code.
// 499 (client closed) has no standard status: it only reaches logs and metrics.
var errorKinds = map[int]errorKind{
	wire.CodeBadRequest:              {http.StatusBadRequest, "invalid_request_error", "bad_request"},
	wire.CodeUnauthorized:            {http.StatusUnauthorized, "invalid_request_error", "invalid_api_key"},
	wire.CodePrivacy:                 {http.StatusForbidden, "permission_error", "privacy_violation"},
	wire.CodeNotFound:                {http.StatusNotFound, "invalid_request_error", "model_not_found"},
	wire.CodeConflict:                {http.StatusConflict, "invalid_request_error", "conflict"},
	wire.CodeOverloaded:              {http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"},
	wire.CodeCanceled:                {wire.CodeCanceled, "invalid_request_error", "client_closed_request"},
	wire.CodeNoCapacity:              {http.StatusServiceUnavailable, "server_error", "no_capacity"},
	wire.CodeTimeout:                 {http.StatusGatewayTimeout, "server_error", "timeout"},
	http.StatusRequestTimeout:        {http.StatusRequestTimeout, "invalid_request_error", "request_timeout"},
	http.StatusRequestEntityTooLarge: {http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
	http.StatusMethodNotAllowed:      {http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed"},
}

// internalError is the kind of every code errorKinds does not name.
var internalError = errorKind{http.StatusInternalServerError, "server_error", "internal_error"}

func kindOf(code int) errorKind {
	if k, ok := errorKinds[code]; ok {
		return k
	}
	return internalError
}

// genericTexts is what a tenant is shown for an error whose description it
// may not see: the mesh's, the SDK's, a node's and the gateway's own faults
// name nodes, backend URLs, subjects and NATS errors. Codes not here (and
// any other 5xx) show "internal error"; 404 and 413 are built in publicText.
var genericTexts = map[int]string{
	wire.CodeBadRequest:         "invalid request",
	wire.CodeUnauthorized:       "missing or invalid API key",
	wire.CodePrivacy:            "no node may serve this request under its privacy and region requirements",
	wire.CodeConflict:           "conflict, retry later",
	wire.CodeOverloaded:         "rate limited, retry later",
	wire.CodeNoCapacity:         "no capacity for this request, retry later",
	wire.CodeTimeout:            "timed out",
	http.StatusRequestTimeout:   "request body not received in time",
	http.StatusMethodNotAllowed: "method not allowed",
}

// Longest texts a caller's input may put into an answer or a log line:
// every id of the mesh fits in wire.MaxIDLen; a description is cut at
// maxShownLen in answers and maxLoggedLen in logs.
const (
	maxShownLen  = 1 << 10
	maxLoggedLen = 8 << 10
)

// publicError marks a *wire.Error whose description the caller may see as
// it is: the gateway wrote it about the caller's own request (its body, its
// X-Fed-* headers, its key, its own tenant's limits) and it names nothing
// else. Every other error is shown as its code's generic text; its
// description goes to the access log only.
type publicError struct{ we *wire.Error }

func (e *publicError) Error() string { return e.we.Error() }
func (e *publicError) Unwrap() error { return e.we }

// invalid is a publicError: what is wrong with the caller's own request.
func invalid(code int, format string, args ...any) error {
	return &publicError{wire.Errorf(code, format, args...)}
}

// failure is one failed request: the wire error with all its detail (for
// the access log and metrics) and whether its description may be shown.
type failure struct {
	*wire.Error
	shown bool
}

// classify turns any error of a request into a failure with the right code:
// the mesh's own, 499 when the HTTP client went away, 504 on deadline, 503
// while the gateway stops. The request id is always the gateway's.
func classify(err error, requestID string) failure {
	var tl *client.BodyTooLargeError
	if errors.As(err, &tl) { // the body cap: the caller's own numbers
		return classify(invalid(wire.CodeTooLarge, "request body of %d bytes is larger than the limit of %d bytes", tl.Size, tl.Limit), requestID)
	}
	var pe *publicError
	if errors.As(err, &pe) {
		we := *pe.we
		we.RequestID = requestID
		return failure{Error: &we, shown: true}
	}
	var we *wire.Error
	if errors.As(err, &we) {
		c := *we
		c.RequestID = requestID
		return failure{Error: &c}
	}
	f := failure{Error: &wire.Error{Code: wire.CodeInternal, Description: err.Error(), RequestID: requestID}}
	switch {
	case errors.Is(err, context.Canceled):
		f.Code, f.Description = wire.CodeCanceled, "client closed the request"
	case errors.Is(err, context.DeadlineExceeded):
		f.Code, f.Description = wire.CodeTimeout, "no answer before the deadline: "+err.Error()
	case errors.Is(err, client.ErrClosed):
		f = classify(shuttingDown(), requestID)
	}
	return f
}

// shuttingDown is the error of a request a stopping gateway gives up; the
// caller may know, so it retries elsewhere.
func shuttingDown() error {
	return invalid(wire.CodeNoCapacity, "gateway is shutting down, retry later")
}

// bodyError is the error of reading a request body (what names it): too
// large is 413, not in by the read deadline 408, a broken connection 400
// (its text names the gateway's address: logs only), anything else a 400
// about the caller's own bytes.
func bodyError(what string, err error) error {
	var tooBig *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &tooBig):
		return invalid(http.StatusRequestEntityTooLarge, "%s is larger than the gateway's limit of %d bytes", what, tooBig.Limit)
	case errors.As(err, &ne) && ne.Timeout():
		return wire.Errorf(http.StatusRequestTimeout, "%s not received within the read timeout: %v", what, err)
	case errors.As(err, &ne):
		return wire.Errorf(wire.CodeBadRequest, "read %s: %v", what, err)
	default:
		return invalid(wire.CodeBadRequest, "%s: %s", what, clip(err.Error(), maxShownLen))
	}
}

// publicText is what the caller is shown for f (its request id follows):
// the description when the gateway wrote it about the caller's own request,
// else the generic text of the code. model is the one the caller asked for.
func (s *Service) publicText(f failure, model string) string {
	if f.shown && f.Description != "" {
		return clip(f.Description, maxShownLen)
	}
	switch f.Code {
	case wire.CodeNotFound:
		if model != "" {
			// the caller's own model id, valid by now (begin checked it)
			return "model " + clip(model, wire.MaxIDLen) + " does not exist or no node serves it"
		}
		return "no node serves this request"
	case http.StatusRequestEntityTooLarge:
		// the SDK's 413: the request does not fit one NATS message
		return fmt.Sprintf("request too large: headers and body must fit in %d bytes", s.nc.MaxPayload())
	}
	if t, ok := genericTexts[f.Code]; ok {
		return t
	}
	return "internal error"
}

func (s *Service) errorBody(f failure, model string) apiError {
	k := kindOf(f.Code)
	msg := s.publicText(f, model)
	if f.RequestID != "" {
		msg += " (request " + f.RequestID + ")"
	}
	return apiError{Error: apiErrorBody{Message: msg, Type: k.typ, Code: k.code}}
}

// writeError answers with the OpenAI error JSON for f. Error answers carry
// X-Fed-Request-Id but never X-Fed-Node: which node failed is for the log.
func (s *Service) writeError(w http.ResponseWriter, f failure, model string) {
	k := kindOf(f.Code)
	if k.status == wire.CodeCanceled {
		return // nobody is listening
	}
	h := w.Header()
	h.Del(hdrNode)
	h.Del(hdrTokens)
	if f.RequestID != "" {
		h.Set(hdrRequestID, f.RequestID)
	}
	if k.status == http.StatusTooManyRequests && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1") // the mesh's 429s say no more than "later"
	}
	writeJSON(w, k.status, s.errorBody(f, model))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"message":"encode response","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// clip cuts s to at most n bytes on a character boundary, marking the cut:
// a caller's 200 KB model name must not become a 200 KB answer or log line.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
