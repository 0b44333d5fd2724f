package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Out-of-band bodies (DESIGN §3.7). A request whose headers and body do
// not fit blobs.InlineLimit of the connection's max_payload has its body
// uploaded to fed_blobs, streaming, before it is published, and carries
// Fed-Body-Blob instead; an answer a node stored there (Fed-Answer-Blob)
// is fetched when its final arrives. The Client deletes both when the
// request ends for the caller (answer, error, deadline, cancel, Close):
// the bucket's TTL only catches what a crashed process left.

// blobDeleteGrace is how long Close waits for the deletes of answer blobs
// nobody read (each is bounded by its own timeout too).
const blobDeleteGrace = 5 * time.Second

// defaultMaxPayload stands for the server's when the connection does not
// know it yet (not connected): nats-server's default.
const defaultMaxPayload = 1 << 20

// WithMaxBody sets the body cap: a request body larger than n bytes is
// refused with a *BodyTooLargeError before anything is uploaded, and an
// answer larger than n is not fetched. 0 or less keeps
// blobs.DefaultMaxBytes (64 MiB).
func WithMaxBody(n int64) Option {
	return func(c *Client) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// MaxBody is the Client's body cap (WithMaxBody).
func (c *Client) MaxBody() int64 { return c.maxBody }

// BodyTooLargeError is a request body over the Client's cap (WithMaxBody).
// It is refused before anything is uploaded; a BodyReader of unknown size
// is stopped once it passes the cap (Partial), and what it had uploaded is
// purged. errors.As gives the *wire.Error too (code 413).
type BodyTooLargeError struct {
	RequestID string
	Size      int64 // the body's size; with Partial, the bytes read when it passed the cap
	Partial   bool
	Limit     int64
}

func (e *BodyTooLargeError) wire() *wire.Error {
	var d string
	if e.Partial {
		d = fmt.Sprintf("request body is larger than the limit of %d bytes (more than %d bytes read)", e.Limit, e.Size)
	} else {
		d = fmt.Sprintf("request body of %d bytes is larger than the limit of %d bytes", e.Size, e.Limit)
	}
	return &wire.Error{Code: wire.CodeTooLarge, RequestID: e.RequestID, Description: d}
}

func (e *BodyTooLargeError) Error() string { return e.wire().Error() }

// Unwrap is the 413 as a *wire.Error.
func (e *BodyTooLargeError) Unwrap() error { return e.wire() }

// body is what start sends: inline bytes, or the name of the uploaded blob.
type body struct {
	data []byte
	blob string
}

// prepareBody decides how r's body travels and uploads it when it goes out
// of band; hdr (the request's headers) then gets Fed-Body-Blob and
// Fed-Body-Size and a fresh Fed-Timeout-Ms. Nothing is uploaded for a body
// over the cap whose size is known.
func (c *Client) prepareBody(ctx context.Context, r *Request, hdr nats.Header, deadline time.Time) (body, error) {
	rd := r.BodyReader
	if rd != nil && r.Body != nil {
		return body{}, &wire.Error{Code: wire.CodeBadRequest, RequestID: r.RequestID, Description: "request has both Body and BodyReader"}
	}
	if r.Upload != nil {
		return c.uploadedBody(r, hdr, deadline)
	}
	size, known := int64(len(r.Body)), true
	if rd != nil {
		size, known = r.BodySize, r.BodySize > 0
	}
	if known && size > c.maxBody {
		return body{}, &BodyTooLargeError{RequestID: r.RequestID, Size: size, Limit: c.maxBody}
	}
	maxPayload := c.nc.MaxPayload()
	if maxPayload <= 0 {
		maxPayload = defaultMaxPayload
	}
	// room for the body inline, next to its headers
	room := blobs.InlineLimit(maxPayload) - msgSize(hdr, nil)
	if room < 0 { // only a body can go out of band
		return body{}, &wire.Error{Code: wire.CodeTooLarge, RequestID: r.RequestID, Description: fmt.Sprintf(
			"request headers of %d bytes do not fit the NATS max_payload of %d bytes less the %d bytes kept for the headers the router adds",
			msgSize(hdr, nil), maxPayload, blobs.Headroom)}
	}
	switch {
	case rd == nil && size <= room:
		return body{data: r.Body}, nil
	case rd == nil:
		rd = bytes.NewReader(r.Body)
	case !known || size <= room:
		// A reader of unknown (or small) size: at most room+1 bytes are
		// read to tell whether it fits inline.
		buf, err := io.ReadAll(io.LimitReader(rd, room+1))
		if err != nil {
			return body{}, &BodyReadError{RequestID: r.RequestID, Err: err}
		}
		if int64(len(buf)) <= room {
			return body{data: buf}, nil
		}
		rd = io.MultiReader(bytes.NewReader(buf), rd)
	}
	ref, err := c.upload(ctx, r.RequestID, rd)
	if err != nil {
		return body{}, err
	}
	left := time.Until(deadline)
	if left <= 0 {
		c.deleteBlob(ref.Name)
		return body{}, &wire.Error{Code: wire.CodeTimeout, RequestID: r.RequestID, Description: "deadline passed while the request body was uploaded"}
	}
	ref.SetBody(hdr) // Fed-Body-Blob, Fed-Body-Size, Fed-Body-Key
	// the upload took some of the time: the router's deadline is what is left
	hdr.Set(wire.HdrTimeoutMs, strconv.FormatInt(max(left.Milliseconds(), 1), 10))
	return body{blob: ref.Name}, nil
}

// Upload is a request body stored in fed_blobs before its request is made
// (Client.Upload), for a caller that knows how to route a body only once it
// has read all of it: the gateway reads model and stream of a JSON body as
// it uploads it, so it never holds the body whole. Give it to one Request
// (Request.Upload): that request deletes it when it ends for the caller,
// or at once when it fails before it is sent. Discard deletes one that no
// request took; it is safe to call in any case (a deferred Discard).
type Upload struct {
	c     *Client
	ref   blobs.Ref
	taken atomic.Bool // a request or Discard has it
}

// Size is the body's length in bytes.
func (u *Upload) Size() int64 { return u.ref.Size }

// Discard deletes the blob unless a request took it (or it was discarded).
func (u *Upload) Discard() {
	if u != nil && u.taken.CompareAndSwap(false, true) {
		u.c.deleteBlob(u.ref.Name)
	}
}

// Upload seals and stores what rd yields as the body of request requestID,
// streaming (a chunk in memory at a time), whatever its size (a small body
// is stored too; Request.Body is the way for one that fits a message). More
// than the Client's cap ends it with a *BodyTooLargeError (Partial); an
// error reading rd is a *BodyReadError wrapping it; either way,
// and on any other failure, what was sent is purged.
func (c *Client) Upload(ctx context.Context, requestID string, rd io.Reader) (*Upload, error) {
	src := &errReader{r: rd}
	ref, err := c.upload(ctx, requestID, src)
	if src.err != nil { // the caller's reader failed: its error, not the store's
		return nil, &BodyReadError{RequestID: requestID, Err: src.err}
	}
	if err != nil {
		return nil, err
	}
	return &Upload{c: c, ref: ref}, nil
}

// BodyReadError is the caller's own body reader failing while the SDK reads
// or uploads it (not the store's failure): a relay such as the gateway
// answers it as the client's fault. Err is the reader's error.
type BodyReadError struct {
	RequestID string
	Err       error
}

func (e *BodyReadError) Error() string {
	return fmt.Sprintf("fedmesh client: read the body of request %s: %v", e.RequestID, e.Err)
}

func (e *BodyReadError) Unwrap() error { return e.Err }

// errReader keeps the error of its reader other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// uploadedBody is prepareBody for a body uploaded already (Request.Upload):
// the request takes the blob over, or deletes it when it cannot.
func (c *Client) uploadedBody(r *Request, hdr nats.Header, deadline time.Time) (body, error) {
	u := r.Upload
	if r.Body != nil || r.BodyReader != nil {
		return body{}, &wire.Error{Code: wire.CodeBadRequest, RequestID: r.RequestID, Description: "request has both an Upload and a Body or BodyReader"}
	}
	if u.c != c {
		return body{}, &wire.Error{Code: wire.CodeBadRequest, RequestID: r.RequestID, Description: "request's Upload belongs to another Client"}
	}
	if !u.taken.CompareAndSwap(false, true) {
		return body{}, &wire.Error{Code: wire.CodeBadRequest, RequestID: r.RequestID, Description: "request's Upload was used or discarded already"}
	}
	if time.Until(deadline) <= 0 {
		c.deleteBlob(u.ref.Name)
		return body{}, &wire.Error{Code: wire.CodeTimeout, RequestID: r.RequestID, Description: "deadline passed before the request was sent"}
	}
	u.ref.SetBody(hdr) // Fed-Body-Blob, Fed-Body-Size, Fed-Body-Key
	// start checks that the headers alone fit, and deletes the blob if not
	return body{blob: u.ref.Name}, nil
}

// upload seals and stores rd as a new request blob (at most the cap),
// streaming.
func (c *Client) upload(ctx context.Context, requestID string, rd io.Reader) (blobs.Ref, error) {
	store, err := c.blobs.Store(ctx)
	if err != nil {
		return blobs.Ref{}, &wire.Error{Code: wire.CodeNoCapacity, RequestID: requestID,
			Description: fmt.Sprintf("request body too large for one NATS message, and the blob store is not available: %v", err)}
	}
	ref, err := store.Put(ctx, blobs.NewName(blobs.RequestPrefix), rd, c.maxBody)
	var tl *blobs.TooLargeError
	switch {
	case err == nil:
		return ref, nil
	case errors.As(err, &tl):
		return blobs.Ref{}, &BodyTooLargeError{RequestID: requestID, Size: tl.Size, Partial: true, Limit: c.maxBody}
	case errors.Is(err, context.DeadlineExceeded):
		return blobs.Ref{}, &wire.Error{Code: wire.CodeTimeout, RequestID: requestID, Description: "deadline passed while the request body was uploaded"}
	case ctx.Err() != nil:
		return blobs.Ref{}, ctx.Err()
	}
	return blobs.Ref{}, &wire.Error{Code: wire.CodeNoCapacity, RequestID: requestID,
		Description: fmt.Sprintf("request body could not be stored in the blob store: %v", err)}
}

// deleteBlob removes a blob the Client is done with, now; a failure is
// left to the bucket's TTL.
func (c *Client) deleteBlob(name string) {
	store, err := c.blobs.Store(context.Background())
	if err == nil {
		err = store.Delete(context.Background(), name)
	}
	if err != nil {
		c.blobLeaks.Add(1)
	}
}

// deleteSoon removes a blob the Client is done with off the caller's path
// (a purge of 64 MiB of chunks takes tens of milliseconds the caller need
// not wait for); Close waits for it. While closing it deletes at once.
func (c *Client) deleteSoon(name string) {
	if !c.bg.Go(func(context.Context) { c.deleteBlob(name) }) {
		c.deleteBlob(name)
	}
}

// deleteLater removes, off the delivery path, the answer blob of a final
// nobody reads (late, or a second node's); Close waits for it.
func (c *Client) deleteLater(m *nats.Msg) {
	ref, ok, err := blobs.AnswerRef(m.Header)
	if !ok || err != nil {
		return
	}
	if !c.bg.Go(func(context.Context) { c.deleteBlob(ref.Name) }) {
		c.blobLeaks.Add(1) // closing: the TTL takes it
	}
}

// BlobLeaks counts blobs the Client could not delete (the blob store
// failed, or the Client was closing): the bucket's TTL removes them.
func (c *Client) BlobLeaks() int64 { return c.blobLeaks.Load() }

// answerTo writes a final's answer to w: its payload, or the blob it names
// (which is deleted once read, whatever happened, in the background). It returns the bytes
// written.
func (c *Client) answerTo(ctx context.Context, cl *call, m item, w io.Writer) (int64, error) {
	ref, ok, err := blobs.AnswerRef(m.hdr)
	if err != nil {
		var we *wire.Error
		errors.As(err, &we)
		return 0, &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: m.node, Description: "bad answer: " + we.Description}
	}
	if !ok {
		n, err := w.Write(m.data)
		return int64(n), err
	}
	defer c.deleteSoon(ref.Name)
	if b, ok := w.(*bytes.Buffer); ok && ref.Size > 0 && ref.Size <= c.maxBody {
		b.Grow(int(ref.Size))
	}
	store, err := c.blobs.Store(ctx)
	var n int64
	if err == nil {
		n, err = store.WriteTo(ctx, ref, w, c.maxBody)
	}
	var tl *blobs.TooLargeError
	switch {
	case err == nil:
		return n, nil
	case errors.As(err, &tl):
		return n, &wire.Error{Code: wire.CodeTooLarge, RequestID: cl.id, Node: m.node,
			Description: fmt.Sprintf("answer of %d bytes is larger than the limit of %d bytes", tl.Size, tl.Limit)}
	case ctx.Err() != nil:
		cl.cancel() // nothing to stop by now, but a caller's cancel is always published
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return n, &wire.Error{Code: wire.CodeTimeout, RequestID: cl.id, Node: m.node, Description: "deadline passed while the answer was fetched"}
		}
		return n, ctx.Err()
	}
	return n, &wire.Error{Code: wire.CodeInternal, RequestID: cl.id, Node: m.node,
		Description: fmt.Sprintf("answer could not be read from the blob store: %v", err)}
}
