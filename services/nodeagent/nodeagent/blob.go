package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Out-of-band bodies (DESIGN §3.7). A request whose body is in fed_blobs
// (Fed-Body-Blob) is fetched whole before the backend runs; the node never
// deletes it (the requester does when the request ends, so a node taking
// over after this one died finds it still there). A whole answer larger
// than the inline limit of max_payload is stored in fed_blobs and the final
// names it (Fed-Answer-Blob); the client deletes it once read. Stream
// chunks are never stored: a piece too large for one message goes as
// several chunks.

// generate runs the backend on j with its body (fetched first when it came
// out of band), then stores a whole answer too large for one message.
func (s *Service) generate(j *job, out *output) (backend.Result, error) {
	if err := s.fetchBody(j); err != nil {
		return backend.Result{}, err
	}
	res, err := s.cfg.Backend.Generate(j.ctx, j.call, out.emit)
	if err != nil || j.call.Stream {
		return res, err
	}
	return res, s.storeAnswer(j, out)
}

// fetchBody puts j's out-of-band body into its backend call.
func (s *Service) fetchBody(j *job) error {
	if j.bodyErr != nil {
		return j.bodyErr
	}
	if !j.bodyOut {
		return nil
	}
	ref, limit := j.body, s.cfg.MaxBlobBytes
	if ref.Size > limit {
		return wire.Errorf(wire.CodeTooLarge, "request body of %d bytes is larger than node %s's limit of %d bytes", ref.Size, s.cfg.NodeID, limit)
	}
	store, err := s.blobs.Store(j.ctx)
	if err != nil {
		return s.blobFailure(j, fmt.Errorf("open the blob store: %w", err))
	}
	data, err := store.Bytes(j.ctx, ref, limit)
	var tl *blobs.TooLargeError
	switch {
	case errors.Is(err, blobs.ErrNotFound):
		return wire.Errorf(wire.CodeBadRequest, "request body %s is not in %s (deleted when its request ended, or expired)", ref.Name, "fed_blobs")
	case errors.Is(err, blobs.ErrSealed):
		return wire.Errorf(wire.CodeBadRequest, "request body %s does not open with header %s, or is not the %s it says", ref.Name, blobs.HdrBodyKey, blobs.HdrBodySize)
	case errors.As(err, &tl):
		return wire.Errorf(wire.CodeTooLarge, "request body of %d bytes is larger than node %s's limit of %d bytes", tl.Size, s.cfg.NodeID, limit)
	case err != nil:
		return s.blobFailure(j, fmt.Errorf("fetch request body %s: %w", ref.Name, err))
	}
	j.call.Body = data
	return nil
}

// storeAnswer moves a whole answer too large for one message to fed_blobs;
// a client that did not say it reads blobs (a plain `nats req`) gets a 413
// naming the limit instead.
func (s *Service) storeAnswer(j *job, out *output) error {
	maxPayload := s.nc.MaxPayload()
	size := len(out.body)
	if int64(size) <= blobs.InlineLimit(maxPayload) {
		return nil
	}
	if !j.acceptBlob {
		return wire.Errorf(wire.CodeTooLarge, "answer of %d bytes does not fit the NATS max_payload of %d bytes; "+
			"send the request with header %s: true (the fedmesh SDK does) to get it out of band from fed_blobs", size, maxPayload, blobs.HdrAccept)
	}
	if int64(size) > s.cfg.MaxBlobBytes {
		return wire.Errorf(wire.CodeTooLarge, "answer of %d bytes is larger than node %s's limit of %d bytes", size, s.cfg.NodeID, s.cfg.MaxBlobBytes)
	}
	s.ackNow(j) // an answer at once goes the usual way from here: a put takes a while
	store, err := s.blobs.Store(j.ctx)
	if err != nil {
		return s.blobFailure(j, fmt.Errorf("open the blob store: %w", err))
	}
	ref, err := store.Put(j.ctx, blobs.NewName(blobs.AnswerPrefix), bytes.NewReader(out.body), s.cfg.MaxBlobBytes)
	if err != nil {
		return s.blobFailure(j, fmt.Errorf("store the answer: %w", err))
	}
	out.answer, out.body = &ref, nil
	return nil
}

// blobFailure is the final error of a failed blob read or write: the reason
// the job's context ended when it did (cancel, deadline, drain: run's
// failure turns it into the usual final), else a 500 naming the node.
func (s *Service) blobFailure(j *job, err error) error {
	if j.ctx.Err() != nil {
		return context.Cause(j.ctx)
	}
	return &wire.Error{Code: wire.CodeInternal, Description: fmt.Sprintf("node %s: %v", s.cfg.NodeID, err)}
}

// deleteAnswer removes an answer blob no final will name (the attempt was
// withdrawn, or the client could not be reached).
func (s *Service) deleteAnswer(j *job, name string) {
	store, err := s.blobs.Store(context.Background())
	if err == nil {
		err = store.Delete(context.Background(), name)
	}
	if err != nil && !s.nc.IsClosed() {
		s.log.Debug().Err(err).Str(logging.KeyRequest, j.call.RequestID).Msg("answer blob left to the TTL")
	}
}

// pieceLen is how much of b one chunk message carries: all of it when it
// fits max, else max cut back to the start of a UTF-8 sequence (text is
// never split inside a character; binary output is cut at max).
func pieceLen(b []byte, max int) int {
	if len(b) <= max || max <= 0 {
		return len(b)
	}
	for n := max; n > max-utf8.UTFMax && n > 0; n-- {
		if utf8.RuneStart(b[n]) {
			return n
		}
	}
	return max
}
