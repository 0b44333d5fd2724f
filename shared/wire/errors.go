package wire

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Error codes carried in Nats-Service-Error-Code (DESIGN §3).
const (
	CodeBadRequest   = 400
	CodeUnauthorized = 401
	CodePrivacy      = 403
	CodeNotFound     = 404
	CodeConflict     = 409
	// CodeTooLarge: the request does not fit a NATS message on its way (the
	// router's dispatch adds headers to what the client sent).
	CodeTooLarge   = 413
	CodeOverloaded = 429
	CodeInternal   = 500
	CodeNoCapacity = 503
	CodeTimeout    = 504
	// CodeCanceled is the final code of a stream its client canceled (nginx's 499).
	CodeCanceled = 499
)

// Error is a typed fedmesh error as it travels on the wire. It carries the
// request and node it concerns so a log line or a caller can say which.
type Error struct {
	Code        int
	Description string
	RequestID   string
	Node        string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("fedmesh %d: %s", e.Code, e.Description)
	if e.RequestID != "" {
		s += " (request " + e.RequestID
		if e.Node != "" {
			s += ", node " + e.Node
		}
		s += ")"
	} else if e.Node != "" {
		s += " (node " + e.Node + ")"
	}
	return s
}

// Is makes errors.Is(err, &wire.Error{Code: 503}) match on the code alone.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code && (t.Description == "" || t.Description == e.Description)
}

// Errorf builds an Error with a formatted description.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// CodeOf returns the wire code of err: its own when err wraps an *Error, 500 otherwise.
func CodeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// SetError writes the micro-style error headers and Fed-Status: error into h.
func SetError(h nats.Header, code int, description string) {
	h.Set(HdrStatus, StatusError)
	h.Set(HdrServiceError, description)
	h.Set(HdrServiceErrorCode, strconv.Itoa(code))
}

// ErrorFromHeader returns the Error a final message carries, or nil when the
// message is not an error. A code that does not parse is reported as 500.
func ErrorFromHeader(h nats.Header) *Error {
	if h == nil {
		return nil
	}
	codeStr := h.Get(HdrServiceErrorCode)
	if h.Get(HdrStatus) != StatusError && codeStr == "" {
		return nil
	}
	code, err := strconv.Atoi(codeStr)
	if err != nil || code <= 0 {
		code = CodeInternal
	}
	return &Error{
		Code:        code,
		Description: h.Get(HdrServiceError),
		RequestID:   h.Get(HdrRequestID),
		Node:        h.Get(HdrNode),
	}
}

// ErrorMsg builds a reply carrying err as micro-style error headers (its wire
// code, or 500) and an empty payload.
func ErrorMsg(err error) *nats.Msg {
	code := CodeOf(err)
	desc := err.Error()
	var we *Error
	if errors.As(err, &we) {
		desc = we.Description
	}
	m := &nats.Msg{Header: nats.Header{}}
	SetError(m.Header, code, desc)
	return m
}

// RespondError publishes err as an error reply to reply. Handlers that answer
// from a goroutine other than the micro callback must use it instead of
// micro.Request.Error: that method records the error on the request, which
// micro reads concurrently for its stats once the callback has returned.
func RespondError(nc *nats.Conn, reply string, err error) error {
	if reply == "" {
		return nil
	}
	m := ErrorMsg(err)
	m.Subject = reply
	return nc.PublishMsg(m)
}
