package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

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

// toWire turns any error of a request into a *wire.Error with the right code:
// the mesh's own, 499 when the HTTP client went away, 504 on deadline.
func toWire(err error, requestID string) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	we = &wire.Error{Code: wire.CodeInternal, Description: err.Error(), RequestID: requestID}
	switch {
	case errors.Is(err, context.Canceled):
		we.Code, we.Description = wire.CodeCanceled, "client closed the request"
	case errors.Is(err, context.DeadlineExceeded):
		we.Code, we.Description = wire.CodeTimeout, "no answer before the deadline"
	case errors.Is(err, client.ErrClosed):
		we = shuttingDown(requestID)
	}
	return we
}

// shuttingDown is the error of a request a stopping gateway gives up.
func shuttingDown(requestID string) *wire.Error {
	return &wire.Error{Code: wire.CodeNoCapacity, Description: "gateway is shutting down", RequestID: requestID}
}

func errorBody(we *wire.Error) apiError {
	k := kindOf(we.Code)
	msg := we.Description
	if msg == "" {
		msg = http.StatusText(k.status)
	}
	if we.RequestID != "" {
		msg += " (request " + we.RequestID + ")"
	}
	return apiError{Error: apiErrorBody{Message: msg, Type: k.typ, Code: k.code}}
}

// writeError answers with the OpenAI error JSON for we.
func writeError(w http.ResponseWriter, we *wire.Error) {
	k := kindOf(we.Code)
	if k.status == wire.CodeCanceled {
		return // nobody is listening
	}
	if we.RequestID != "" {
		w.Header().Set(hdrRequestID, we.RequestID)
	}
	writeJSON(w, k.status, errorBody(we))
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
