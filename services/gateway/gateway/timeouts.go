package gateway

import (
	"net/http"
	"time"
)

// writeDeadlines gives every write of a response its own deadline: a whole
// answer, or one SSE event, must reach the connection within timeout of
// being written. http.Server.WriteTimeout would bound the whole response
// instead and cut a long stream (or a slow answer) short; this only cuts a
// client that stops reading. The server clears the deadline once the
// response is done, so the next request on the connection starts clean.
type writeDeadlines struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func withWriteDeadlines(w http.ResponseWriter, timeout time.Duration) *writeDeadlines {
	return &writeDeadlines{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
}

// arm moves the deadline to timeout from now. The write itself may only
// land in the server's buffer; the deadline is in force when a later write
// or flush (or the end of the response) sends it.
func (d *writeDeadlines) arm() { _ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout)) }

func (d *writeDeadlines) Write(b []byte) (int, error) {
	d.arm()
	return d.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls (sse.go).
func (d *writeDeadlines) FlushError() error {
	d.arm()
	return d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer for
// everything else (read deadlines, hijack).
func (d *writeDeadlines) Unwrap() http.ResponseWriter { return d.ResponseWriter }
