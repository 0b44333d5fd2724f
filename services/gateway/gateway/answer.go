package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Large JSON answers (DESIGN §3.7 step 7). A whole answer that does not
// fit one message comes from fed_blobs a segment at a time and is passed
// on as it comes, never held whole: the node's own JSON (images,
// transcriptions) through the streaming scan that checks request bodies
// (jsonscan.go), an embeddings answer through its streaming conversion
// (embeddings.go). The first holdBytes of the output are held until they
// pass, so an answer that is wrong from its start is still a 500; a fault
// found later cuts the connection (the status is out), as a speech answer
// cut short does. An answer that fits one message is read and checked
// whole first, as before.

// holdBytes is how much of a large answer's output waits for the 200.
const holdBytes = 64 << 10

// converter turns a node's answer (in) into the caller's (out).
type converter func(resp *client.Response, in io.Reader, out io.Writer) error

// relayJSONAnswer runs a whole request whose answer is the node's own JSON
// and passes it on; what names that output in the error when it is not
// JSON.
func (x *exchange) relayJSONAnswer(w http.ResponseWriter, what string) {
	x.relay(w, "node answered "+what+" that is not JSON", nil)
}

// relayConverted runs a whole request and writes convert's output of its
// answer; bad opens the error text of an answer it fails on.
func (x *exchange) relayConverted(w http.ResponseWriter, bad string, convert converter) {
	x.relay(w, "node answered "+bad, convert)
}

// relay runs a whole request and answers with its answer checked (convert
// nil) or converted.
func (x *exchange) relay(w http.ResponseWriter, bad string, convert converter) {
	var (
		small *bytes.Buffer // an answer that fit one message
		held  *heldWriter
		sink  answerSink // where a large answer goes
	)
	out := &countingWriter{w: w}
	resp, err := x.s.cl.InferAnswer(x.ctx, x.req, func(resp *client.Response) (io.Writer, error) {
		if resp.Size >= 0 && resp.Size <= x.s.inlineBytes() {
			small = bytes.NewBuffer(make([]byte, 0, resp.Size))
			return small, nil
		}
		w.Header().Set(hdrNode, resp.Node)
		held = &heldWriter{w: out, head: func() {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			if convert == nil && resp.Size >= 0 { // passed on as it is: the size is known
				h.Set("Content-Length", strconv.FormatInt(resp.Size, 10))
			}
		}}
		if convert == nil {
			sink = &checkedJSON{sc: newObjectScanner(nil), w: held}
		} else {
			sink = startConversion(resp, convert, held)
		}
		return sink, nil
	})
	var badErr error
	if sink != nil {
		if err != nil {
			sink.abort()
		} else {
			err = sink.Close()
		}
		badErr = sink.fault()
	}
	switch {
	case small != nil && err == nil:
		w.Header().Set(hdrNode, resp.Node)
		x.answerSmall(w, resp, small.Bytes(), bad, convert)
	case err == nil:
		x.ok(http.StatusOK, resp.Node, resp.Tokens)
	case out.n == 0 && out.err == nil: // nothing sent: the usual error answer
		w.Header().Del("Content-Length")
		if badErr != nil {
			x.badOutput(w, resp, bad+": "+badErr.Error())
			return
		}
		x.s.fail(w, x.c, x.req, "", err)
	case out.err != nil: // the client is gone
		x.s.record(x.c, x.req, resp.Node, &wire.Error{Code: wire.CodeCanceled, RequestID: x.req.RequestID,
			Description: "write to client: " + out.err.Error()}, 0)
	default:
		we := classify(err, x.c.requestID).Error
		if badErr != nil {
			we = &wire.Error{Code: wire.CodeInternal, RequestID: x.req.RequestID, Node: resp.Node,
				Description: bad + " (after " + strconv.FormatInt(out.n, 10) + " bytes sent): " + badErr.Error()}
		}
		x.s.record(x.c, x.req, resp.Node, we, 0)
		panic(http.ErrAbortHandler) // the server closes the connection without a log line
	}
}

// answerSmall checks or converts an answer read whole, then sends it.
func (x *exchange) answerSmall(w http.ResponseWriter, resp *client.Response, body []byte, bad string, convert converter) {
	if convert == nil {
		if !json.Valid(body) {
			x.badOutput(w, resp, bad)
			return
		}
		x.answerJSON(w, resp, body)
		return
	}
	var out bytes.Buffer
	if err := convert(resp, bytes.NewReader(body), &out); err != nil {
		x.badOutput(w, resp, bad+": "+err.Error())
		return
	}
	x.answerJSON(w, resp, out.Bytes())
}

// answerSink is where a large answer is written: Close ends a complete
// answer (its error is the output's), abort one the mesh failed to deliver;
// fault is then what was wrong with the answer, if anything.
type answerSink interface {
	io.Writer
	Close() error
	abort()
	fault() error
}

// heldWriter holds the first holdBytes written to it, then passes them and
// everything after on to w; head runs before the first byte reaches w.
type heldWriter struct {
	w    io.Writer
	head func()
	hold []byte
	sent bool // hold went out
}

func (h *heldWriter) Write(p []byte) (int, error) {
	if h.sent {
		return h.w.Write(p)
	}
	h.hold = append(h.hold, p...)
	if len(h.hold) >= holdBytes {
		if err := h.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush sends what is held (at the end, or once holdBytes are).
func (h *heldWriter) flush() error {
	if h.sent {
		return nil
	}
	h.sent = true
	h.head()
	_, err := h.w.Write(h.hold)
	h.hold = nil
	return err
}

// checkedJSON passes on what the scan accepts: each piece is scanned before
// it is written. bad is the scan's error.
type checkedJSON struct {
	sc  *objectScanner
	w   *heldWriter
	bad error
}

func (c *checkedJSON) Write(p []byte) (int, error) {
	if _, err := c.sc.Write(p); err != nil {
		c.bad = err
		return 0, err
	}
	return c.w.Write(p)
}

// Close checks that the object ended, then sends what is still held.
func (c *checkedJSON) Close() error {
	if err := c.sc.Close(); err != nil {
		c.bad = err
		return err
	}
	return c.w.flush()
}

func (c *checkedJSON) abort() {}

func (c *checkedJSON) fault() error { return c.bad }

// conversion runs a converter on a goroutine that reads what the relay
// writes (a pipe: the converter pulls, InferAnswer pushes). Whoever starts
// one closes it, which waits for the goroutine.
type conversion struct {
	pw   *io.PipeWriter
	done chan struct{}
	err  error // the converter's, once done
	out  *heldWriter
}

// errMesh marks the pipe's end when the mesh side failed: the converter's
// error is then not the answer's fault.
var errMesh = errors.New("answer not delivered")

func startConversion(resp *client.Response, convert converter, out *heldWriter) *conversion {
	pr, pw := io.Pipe()
	c := &conversion{pw: pw, done: make(chan struct{}), out: out}
	go func() {
		defer close(c.done)
		err := convert(resp, pr, out)
		if err == nil {
			if _, err = pr.Read(make([]byte, 1)); err == io.EOF { // nothing may follow what it read
				err = nil
			} else if err == nil {
				err = errors.New("invalid character after top-level value")
			}
		}
		c.err = err
		pr.CloseWithError(err) // a writer still writing stops
	}()
	return c
}

func (c *conversion) Write(p []byte) (int, error) { return c.pw.Write(p) }

// Close ends the input and waits for the converter; its error is the
// answer's fault.
func (c *conversion) Close() error {
	_ = c.pw.Close()
	<-c.done
	if c.err != nil {
		return c.err
	}
	return c.out.flush()
}

// abort ends a conversion the mesh failed, and waits for it.
func (c *conversion) abort() {
	_ = c.pw.CloseWithError(errMesh)
	<-c.done
}

// fault is the converter's error unless it only saw the mesh fail.
func (c *conversion) fault() error {
	if c.err == nil || errors.Is(c.err, errMesh) {
		return nil
	}
	return c.err
}
