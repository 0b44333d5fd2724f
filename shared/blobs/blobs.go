// Package blobs carries request bodies and answers too large for one NATS
// message out of band, through the JetStream Object Store fed_blobs
// (DESIGN §3.7): the sender uploads the bytes and sends the message with a
// header naming the object instead of the body; the receiver fetches it.
// Only the SDK (request bodies, and reading answers) and node agents
// (reading bodies, and writing answers) touch the store; routers route on
// headers alone and never load a blob.
package blobs

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Headers of a message whose body travels in fed_blobs.
const (
	// HdrBody names the object holding a request's body (the message's
	// own payload is then empty); HdrBodySize is the body's size in bytes,
	// HdrBodyKey the key it is sealed with (seal.go).
	HdrBody     = "Fed-Body-Blob"
	HdrBodySize = "Fed-Body-Size"
	HdrBodyKey  = "Fed-Body-Key"
	// HdrAnswer names the object holding a whole answer (on a final
	// "done" whose own payload is then empty), with its size and key.
	HdrAnswer     = "Fed-Answer-Blob"
	HdrAnswerSize = "Fed-Answer-Size"
	HdrAnswerKey  = "Fed-Answer-Key"
	// HdrAccept: true on a request says its client reads an answer from
	// fed_blobs (the SDK always sends it). A node answers a request
	// without it whose whole answer is too large with a 413 instead.
	HdrAccept = "Fed-Accept-Blob"
)

// Object name prefixes: a request body, an answer.
const (
	RequestPrefix = "req."
	AnswerPrefix  = "ans."
)

const (
	// DefaultMaxBytes is the body cap: the largest request body (or
	// answer) the mesh carries, checked before anything is uploaded.
	DefaultMaxBytes int64 = 64 << 20
	// Headroom is what the inline limit keeps of max_payload for headers:
	// the router's dispatch headers (Fed-Reply-To, Fed-Deadline,
	// Fed-Takeover with up to 8 node ids, trace context, …) stay well
	// under it.
	Headroom = 8 << 10
	// ChunkSize is the largest object chunk message; chunks are at most
	// the inline limit too (1 MiB − 8 KiB under the default max_payload).
	// Bigger chunks are fewer messages and acks: 128 KiB chunks (nats.go's
	// default) moved about a third less per second in the blob bench.
	ChunkSize = 1 << 20
	// cleanupTimeout bounds a delete, and a failed upload's purge, that
	// runs after its request's context ended.
	cleanupTimeout = 5 * time.Second
)

// InlineLimit is the threshold for a connection whose server has
// maxPayload: a message (headers and body) larger than it goes out of band.
// It keeps Headroom for the headers hops add, or half of a tiny max_payload.
func InlineLimit(maxPayload int64) int64 {
	if maxPayload <= 2*Headroom {
		return maxPayload / 2
	}
	return maxPayload - Headroom
}

// chunkSize is the object chunk size under max_payload maxPayload.
func chunkSize(maxPayload int64) uint32 {
	lim := InlineLimit(maxPayload)
	if lim <= 0 || lim > ChunkSize {
		return ChunkSize
	}
	return uint32(lim)
}

// nameLen is the length of a name's random part: 128 bits, base64url.
const nameLen = 22

// NewName is an unguessable object name: prefix and 128 random bits. The
// name is the only way to an object (nobody may list the bucket in secured
// mode), so it must not be derivable from the request id.
func NewName(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// CheckName reports whether name is one NewName(prefix) could make.
func CheckName(prefix, name string) bool {
	if len(name) != len(prefix)+nameLen || name[:len(prefix)] != prefix {
		return false
	}
	for _, c := range []byte(name[len(prefix):]) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Ref is a message's reference to a blob: its name, its (plaintext) size
// (-1 when the message did not say) and the key it is sealed with.
type Ref struct {
	Name string
	Size int64
	Key  []byte
}

// refHeaders are the headers of one direction.
type refHeaders struct{ name, size, key, prefix string }

var (
	bodyHeaders   = refHeaders{HdrBody, HdrBodySize, HdrBodyKey, RequestPrefix}
	answerHeaders = refHeaders{HdrAnswer, HdrAnswerSize, HdrAnswerKey, AnswerPrefix}
)

// BodyRef reads a request's Fed-Body-Blob, Fed-Body-Size and Fed-Body-Key.
// ok is false when the request carries its body inline (none of them
// set). A bad or missing value is a 400 naming the header.
func BodyRef(h nats.Header) (Ref, bool, error) { return parseRef(h, bodyHeaders) }

// AnswerRef reads a final's Fed-Answer-Blob, Fed-Answer-Size and
// Fed-Answer-Key (as BodyRef).
func AnswerRef(h nats.Header) (Ref, bool, error) { return parseRef(h, answerHeaders) }

// SetBody writes r as a request's body headers.
func (r Ref) SetBody(h nats.Header) { r.set(h, bodyHeaders) }

// SetAnswer writes r as a final's answer headers.
func (r Ref) SetAnswer(h nats.Header) { r.set(h, answerHeaders) }

func (r Ref) set(h nats.Header, hs refHeaders) {
	h.Set(hs.name, r.Name)
	if r.Size >= 0 {
		h.Set(hs.size, strconv.FormatInt(r.Size, 10))
	}
	h.Set(hs.key, EncodeKey(r.Key))
}

func parseRef(h nats.Header, hs refHeaders) (Ref, bool, error) {
	if h == nil {
		return Ref{}, false, nil
	}
	name, size, key := h.Get(hs.name), h.Get(hs.size), h.Get(hs.key)
	if name == "" && size == "" && key == "" {
		return Ref{}, false, nil
	}
	if !CheckName(hs.prefix, name) {
		return Ref{}, false, wire.Errorf(wire.CodeBadRequest, "header %s: %q is not a blob name (%s and %d base64url characters)",
			hs.name, clip(name), hs.prefix, nameLen)
	}
	r := Ref{Name: name, Size: -1}
	if size != "" {
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n < 0 {
			return Ref{}, false, wire.Errorf(wire.CodeBadRequest, "header %s: %q is not a size in bytes", hs.size, clip(size))
		}
		r.Size = n
	}
	k, ok := decodeKey(key)
	if !ok {
		return Ref{}, false, wire.Errorf(wire.CodeBadRequest, "header %s: not a blob key (%d bytes, base64url)", hs.key, keyLen)
	}
	r.Key = k
	return r, true, nil
}

// clip shortens a caller's value for an error text.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// TooLargeError is a body or answer over the cap. Size is its size, or
// (Partial) how much had been read when it passed the cap.
type TooLargeError struct {
	What    string // "request body", "answer"
	Size    int64
	Partial bool
	Limit   int64
}

func (e *TooLargeError) Error() string {
	if e.Partial {
		return fmt.Sprintf("%s is larger than the limit of %d bytes (more than %d bytes read)", e.What, e.Limit, e.Size)
	}
	return fmt.Sprintf("%s of %d bytes is larger than the limit of %d bytes", e.What, e.Size, e.Limit)
}

// ErrNotFound: no such object (never written, deleted, or expired after
// the bucket's TTL).
var ErrNotFound = errors.New("blob not found (deleted, or expired after the fed_blobs TTL)")

// Store is the opened fed_blobs bucket. It is safe for concurrent use.
type Store struct {
	obs    jetstream.ObjectStore
	stream jetstream.Stream // OBJ_fed_blobs, for purges
	nc     *nats.Conn
}

// OpenStore opens fed_blobs on nc (it never creates it: buckets.Ensure
// does).
func OpenStore(ctx context.Context, nc *nats.Conn) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("blobs: jetstream: %w", err)
	}
	obs, err := js.ObjectStore(ctx, buckets.Blobs)
	if err != nil {
		return nil, fmt.Errorf("blobs: open bucket %s: %w", buckets.Blobs, err)
	}
	st, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("blobs: open stream %s: %w", streamName, err)
	}
	return &Store{obs: obs, stream: st, nc: nc}, nil
}

// streamName is the stream behind fed_blobs.
const streamName = "OBJ_" + buckets.Blobs

// Subjects of an object's messages in the stream.
func chunkSubject(nuid string) string { return "$O." + buckets.Blobs + ".C." + nuid }
func metaSubject(name string) string {
	return "$O." + buckets.Blobs + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

// Put seals what r yields under a new key and uploads it as blob name,
// streaming (a chunk in memory at a time); the Ref it returns (name,
// plaintext size, key) is what the message's headers carry. More than
// limit bytes end it with a *TooLargeError; ctx ending ends it with ctx's
// error. Either way, and on any other failure, what was sent is purged:
// nothing is left behind.
func (s *Store) Put(ctx context.Context, name string, r io.Reader, limit int64) (Ref, error) {
	cr := &capReader{r: r, ctx: ctx, limit: limit, what: whatOf(name)}
	key := newKey()
	sealed, err := sealAhead(cr, key)
	if err != nil {
		return Ref{}, fmt.Errorf("blobs: put %s: %w", name, err)
	}
	// The caller's ctx reaches the upload only through the reader: a
	// cancel fails the next Read, and Put then purges its chunks with a
	// live context (with the cancelled one its purge would fail, and the
	// chunks would stay until the TTL).
	pctx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithDeadline(pctx, dl.Add(cleanupTimeout))
	}
	defer cancel()
	_, err = s.obs.Put(pctx, jetstream.ObjectMeta{Name: name,
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize(s.nc.MaxPayload())}}, sealed)
	sealed.Close() // before cr is read: the sealing goroutine reads through it
	switch {
	case cr.err != nil:
		return Ref{Size: cr.n}, cr.err
	case err != nil:
		return Ref{Size: cr.n}, fmt.Errorf("blobs: put %s: %w", name, err)
	}
	return Ref{Name: name, Size: cr.n, Key: key}, nil
}

// whatOf names an object's content for an error text.
func whatOf(name string) string {
	if len(name) >= len(AnswerPrefix) && name[:len(AnswerPrefix)] == AnswerPrefix {
		return "answer"
	}
	return "request body"
}

// afterCtx is a context for cleanup that must finish although ctx ended:
// not cancelled with ctx, bounded by cleanupTimeout (past ctx's deadline,
// if it has one and it is still ahead).
func afterCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	d := cleanupTimeout
	if dl, ok := ctx.Deadline(); ok {
		d += max(time.Until(dl), 0)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// capReader counts what it reads, and fails once its context ends or more
// than limit bytes came.
type capReader struct {
	r     io.Reader
	ctx   context.Context
	limit int64
	what  string
	n     int64
	err   error // the reader's own failure (cap, context), not r's
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.err != nil { // sticky: io.ReadFull drops an error that comes with the bytes that fill its buffer
		return 0, c.err
	}
	if err := c.ctx.Err(); err != nil {
		c.err = context.Cause(c.ctx)
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		c.err = &TooLargeError{What: c.what, Size: c.n, Partial: true, Limit: c.limit}
		return n, c.err
	}
	return n, err
}

// Bytes fetches and opens blob r whole. One larger than limit is a
// *TooLargeError before anything is read; a missing one ErrNotFound; one
// that does not open with r's key (or is not r's size) ErrSealed.
//
// The sealed blob is read straight into the buffer that is returned (the
// store's chunks land where they stay, as a raw get into a buffer does),
// on a goroutine, while this one opens each segment in place as soon as it
// is in and moves its plaintext down over the tags before it: AES-GCM runs
// beside the transfer, and the only copy past the store's is that move.
func (s *Store) Bytes(ctx context.Context, r Ref, limit int64) ([]byte, error) {
	res, size, err := s.object(ctx, r, limit)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	aead, err := newAEAD(r.Key)
	if err != nil {
		return nil, fmt.Errorf("blobs: %s: %w", r.Name, err)
	}
	buf := make([]byte, SealedSize(size))
	// The reader reports how far buf is filled; the channel holds every
	// report (one per chunk at most), so the reader never waits on it.
	type fill struct {
		off int
		err error
	}
	fills := make(chan fill, len(buf)/int(chunkSize(s.nc.MaxPayload()))+3)
	go func() {
		defer close(fills)
		off := 0
		for off < len(buf) {
			n, err := res.Read(buf[off:])
			off += n
			if err == io.EOF && off < len(buf) {
				err = io.ErrUnexpectedEOF
			}
			if err != nil && err != io.EOF {
				fills <- fill{off, err}
				return
			}
			fills <- fill{off, nil}
		}
		// the store checks the digest at the end
		fills <- fill{off, atEOF(res)}
	}()
	fail := func(err error) ([]byte, error) {
		_ = res.Close() // a read in progress returns
		for range fills {
		}
		return nil, err
	}
	var seq uint64
	var nb [nonceLen]byte
	opened, last := 0, false // sealed bytes opened; the last segment is
	for f := range fills {
		if f.err != nil {
			return fail(fmt.Errorf("blobs: read %s: %w", r.Name, f.err))
		}
		for !last {
			end := opened + sealedSegment
			ad := adMiddle
			if end >= len(buf) {
				end, ad, last = len(buf), adLast, true
			}
			if f.off < end {
				last = false
				break
			}
			plain, err := aead.Open(buf[opened:opened], nonce(nb[:], seq), buf[opened:end], ad)
			if err != nil {
				return fail(fmt.Errorf("blobs: %s: %w", r.Name, ErrSealed))
			}
			copy(buf[int(seq)*SegmentSize:], plain)
			seq++
			opened = end
		}
	}
	if !last { // the reader ended early without an error: cannot happen, but never return unopened bytes
		return nil, fmt.Errorf("blobs: read %s: %w", r.Name, io.ErrUnexpectedEOF)
	}
	return buf[:size:size], nil
}

// WriteTo copies the plaintext of blob r to w, a segment at a time, and
// returns the bytes written (errors as Bytes). What it writes before a
// failure (a changed blob) is not to be trusted.
func (s *Store) WriteTo(ctx context.Context, r Ref, w io.Writer, limit int64) (int64, error) {
	res, pl, _, err := s.get(ctx, r, limit)
	if err != nil {
		return 0, err
	}
	defer res.Close()
	n, err := io.Copy(w, pl)
	if err != nil {
		return n, fmt.Errorf("blobs: copy %s: %w", r.Name, err)
	}
	return n, nil
}

// get opens blob r for reading: what to close when done, its plaintext
// reader and the plaintext size.
func (s *Store) get(ctx context.Context, r Ref, limit int64) (io.Closer, io.Reader, int64, error) {
	res, size, err := s.object(ctx, r, limit)
	if err != nil {
		return nil, nil, 0, err
	}
	// The object's chunks come through a synchronous pipe, one hand-over
	// per Read: read them whole (as a raw get into a large buffer does),
	// not a segment at a time.
	pl, err := openAhead(bufio.NewReaderSize(res, int(chunkSize(s.nc.MaxPayload()))), r.Key)
	if err != nil {
		_ = res.Close()
		return nil, nil, 0, fmt.Errorf("blobs: %s: %w", r.Name, err)
	}
	return &reading{res: res, pl: pl}, pl, size, nil
}

// object opens blob r's object, checked against r and limit before
// anything is read, and returns it with the plaintext size.
func (s *Store) object(ctx context.Context, r Ref, limit int64) (jetstream.ObjectResult, int64, error) {
	res, err := s.obs.Get(ctx, r.Name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, fmt.Errorf("blobs: %s: %w", r.Name, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blobs: get %s: %w", r.Name, err)
	}
	fail := func(err error) (jetstream.ObjectResult, int64, error) {
		_ = res.Close()
		return nil, 0, err
	}
	info, err := res.Info()
	if err != nil {
		return fail(fmt.Errorf("blobs: get %s: %w", r.Name, err))
	}
	size, ok := plainSize(int64(info.Size))
	switch {
	case !ok || (r.Size >= 0 && size != r.Size):
		return fail(fmt.Errorf("blobs: %s: %w", r.Name, ErrSealed))
	case size > limit:
		return fail(&TooLargeError{What: whatOf(r.Name), Size: size, Limit: limit})
	}
	return res, size, nil
}

// reading is an object being read through its opener. Close ends the
// object first, so that an opener step waiting for a chunk returns, then
// stops the opener.
type reading struct {
	res jetstream.ObjectResult
	pl  *ahead
}

func (r *reading) Close() error {
	err := r.res.Close()
	r.pl.Close()
	return err
}

// atEOF reads the EOF after an object's last byte: where the object store
// checks the digest.
func atEOF(r io.Reader) error {
	var b [1]byte
	for range 3 { // a reader may return (0, nil) now and then
		n, err := r.Read(b[:])
		switch {
		case n > 0:
			return errors.New("longer than its size")
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
	return io.ErrNoProgress
}

// Delete removes object name and every message it left in the stream (its
// chunks and its meta record, so not even a delete marker stays). A
// missing object is no error. It runs to the end although ctx ends (it is
// cleanup), bounded by cleanupTimeout past ctx's deadline.
func (s *Store) Delete(ctx context.Context, name string) error {
	dctx, cancel := afterCtx(ctx)
	defer cancel()
	info, err := s.obs.GetInfo(dctx, name, jetstream.GetObjectInfoShowDeleted())
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blobs: delete %s: %w", name, err)
	}
	if info.NUID != "" {
		if err := s.stream.Purge(dctx, jetstream.WithPurgeSubject(chunkSubject(info.NUID))); err != nil {
			return fmt.Errorf("blobs: delete %s: purge chunks: %w", name, err)
		}
	}
	if err := s.stream.Purge(dctx, jetstream.WithPurgeSubject(metaSubject(name))); err != nil {
		return fmt.Errorf("blobs: delete %s: purge meta: %w", name, err)
	}
	return nil
}

// Opener opens fed_blobs on first use and keeps it; a failed open is
// tried again on the next use. It is safe for concurrent use.
type Opener struct {
	nc *nats.Conn
	mu sync.Mutex
	s  *Store
}

// NewOpener opens on nc.
func NewOpener(nc *nats.Conn) *Opener { return &Opener{nc: nc} }

// Store returns the opened store.
func (o *Opener) Store(ctx context.Context) (*Store, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.s != nil {
		return o.s, nil
	}
	s, err := OpenStore(ctx, o.nc)
	if err != nil {
		return nil, err
	}
	o.s = s
	return s, nil
}
