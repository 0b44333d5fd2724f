package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Request bodies (DESIGN §3.7, §12). A body that fits one NATS message is
// read whole, as it always was. A larger one is never held: it streams from
// the HTTP request into fed_blobs (client.Upload, sealed a segment at a
// time) while the gateway reads what it routes by on the way, and the mesh
// request then names the stored body. Memory per upload is a few chunks,
// whatever the body's size.

// requestBody is a body as the gateway passes it on: inline bytes, or a
// body stored already.
type requestBody struct {
	data []byte
	up   *client.Upload
}

// into makes b req's body; req owns a stored one from then on.
func (b requestBody) into(req *client.Request) {
	if b.up != nil {
		req.Upload = b.up
		return
	}
	req.Body = b.data
}

// discard deletes a stored body no request took (safe when one did).
func (b requestBody) discard() { b.up.Discard() }

// inlineBytes is the largest body the gateway reads whole: what fits one
// message on this connection (the SDK uploads it anyway when the headers
// leave it no room).
func (s *Service) inlineBytes() int64 {
	mp := s.nc.MaxPayload()
	if mp <= 0 {
		mp = 1 << 20 // not connected: nats-server's default
	}
	return blobs.InlineLimit(mp)
}

// receive reads rd, what the error texts call it: whole when it fits
// inlineBytes, else streamed into fed_blobs, through sc (when not nil) on
// the way, and sc is then closed. ctx is the HTTP request's (a caller
// that goes away stops the upload).
func (s *Service) receive(ctx context.Context, c caller, what string, rd io.Reader, sc *objectScanner) (requestBody, error) {
	limit := s.inlineBytes()
	head, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return requestBody{}, bodyError(what, err)
	}
	if int64(len(head)) <= limit {
		return requestBody{data: head}, nil
	}
	var rest io.Reader = rd
	if sc != nil {
		if _, err := sc.Write(head); err != nil {
			return requestBody{}, notJSON(err)
		}
		rest = io.TeeReader(rd, sc) // a syntax error fails the read, so the upload stops and is purged
	}
	up, err := s.cl.Upload(ctx, c.requestID, io.MultiReader(bytes.NewReader(head), rest))
	var re *client.BodyReadError // the HTTP body failed, not the store: the caller's fault
	var je *jsonError
	switch {
	case errors.As(err, &re) && errors.As(re.Err, &je):
		return requestBody{}, notJSON(re.Err)
	case errors.As(err, &re):
		return requestBody{}, bodyError(what, re.Err) // 413 past max_body_bytes, 408, a broken connection
	case err != nil:
		return requestBody{}, err // the SDK's cap (413), the store (503), the caller gone (499)
	}
	if sc != nil {
		if err := sc.Close(); err != nil {
			up.Discard()
			return requestBody{}, notJSON(err)
		}
	}
	return requestBody{up: up}, nil
}

// readJSON reads r's body, which must be a JSON object, into v (the
// fields the gateway routes by; the body goes on unchanged).
func (s *Service) readJSON(r *http.Request, c caller, v any) (requestBody, error) {
	sc := newObjectScanner(jsonNames(v))
	b, err := s.receive(r.Context(), c, "request body", r.Body, sc)
	if err != nil {
		return b, err
	}
	if b.up == nil {
		err = json.Unmarshal(b.data, v)
	} else {
		err = sc.decode(v)
	}
	if err != nil {
		b.discard()
		return requestBody{}, notJSON(err)
	}
	return b, nil
}

func notJSON(err error) error {
	return invalid(wire.CodeBadRequest, "request body is not a valid JSON object: %v", err)
}

// tooLargeBody is the 413 of a Content-Length over the cap: nothing is
// read, let alone uploaded.
func (s *Service) tooLargeBody(r *http.Request) error {
	if r.ContentLength <= s.cfg.MaxBodyBytes {
		return nil
	}
	return invalid(http.StatusRequestEntityTooLarge, "request body of %d bytes is larger than the gateway's limit of %d bytes",
		r.ContentLength, s.cfg.MaxBodyBytes)
}
