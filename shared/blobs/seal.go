package blobs

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
)

// Every blob is sealed with a key of its own that travels only in the
// headers of its request or final (Fed-Body-Key, Fed-Answer-Key), which in
// secured mode only the requester, the routers and the serving node see.
// The bucket is shared by every tenant and NATS permissions cannot confine
// a reader to the objects of one request (a direct get of the newest meta
// record, a consumer with a wildcard filter: whoever may read one object
// can reach the others' chunks), so a name alone gives nothing: reading a
// blob takes its key, and a blob swapped or cut short fails to open.
//
// Format (DESIGN §3.7): the plaintext in segments of SegmentSize bytes,
// the last one shorter (empty when the plaintext is a multiple of
// SegmentSize), each sealed with AES-256-GCM under the blob's key; nonce:
// the segment's index as 8 bytes big-endian, then 4 zero bytes; additional
// data: one byte, 1 for the last segment, else 0 (so a blob cut at a
// segment boundary fails to open). Each sealed segment is its plaintext
// plus a 16-byte tag.

// SegmentSize is the plaintext of one sealed segment.
const SegmentSize = 64 << 10

const (
	keyLen   = 32
	tagLen   = 16
	nonceLen = 12
	// sealedSegment is a whole (not last) segment as stored.
	sealedSegment = SegmentSize + tagLen
)

// ErrSealed: a blob that does not open with its key (another key, changed
// or cut short).
var ErrSealed = errors.New("blob does not open with its key (changed, cut short, or another's)")

// newKey is a fresh blob key.
func newKey() []byte {
	k := make([]byte, keyLen)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
}

// EncodeKey is a key as its header carries it (base64url, no padding).
func EncodeKey(k []byte) string { return base64.RawURLEncoding.EncodeToString(k) }

// decodeKey reads a header's key; ok false when it is not one.
func decodeKey(s string) ([]byte, bool) {
	k, err := base64.RawURLEncoding.DecodeString(s)
	return k, err == nil && len(k) == keyLen
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func nonce(dst []byte, seq uint64) []byte {
	dst = dst[:nonceLen]
	binary.BigEndian.PutUint64(dst, seq)
	clear(dst[8:])
	return dst
}

var (
	adMiddle = []byte{0}
	adLast   = []byte{1}
)

// SealedSize is the stored size of a plaintext of n bytes.
func SealedSize(n int64) int64 { return n + tagLen*(n/SegmentSize+1) }

// plainSize is the plaintext size of a sealed blob of c bytes; false when
// no plaintext seals to c bytes.
func plainSize(c int64) (int64, bool) {
	if c < tagLen {
		return 0, false
	}
	segs := (c + sealedSegment - 1) / sealedSegment
	n := c - tagLen*segs
	return n, n >= 0 && SealedSize(n) == c
}

// sealer reads src and yields its sealed segments.
type sealer struct {
	src   io.Reader
	aead  cipher.AEAD
	seq   uint64
	plain []byte
	buf   []byte // where a segment is sealed (out's capacity shrinks as it is read)
	out   []byte // sealed bytes not yet read
	nonce [nonceLen]byte
	done  bool // the last segment is sealed
}

func newSealer(src io.Reader, key []byte) (*sealer, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &sealer{src: src, aead: a, plain: make([]byte, SegmentSize), buf: make([]byte, 0, sealedSegment)}, nil
}

// Read fills p with as many sealed bytes as it can: the object store
// makes one chunk of each Read.
func (s *sealer) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(s.out) == 0 {
			if s.done {
				break
			}
			if err := s.next(); err != nil {
				return n, err
			}
		}
		k := copy(p[n:], s.out)
		s.out = s.out[k:]
		n += k
	}
	if n == 0 && s.done {
		return 0, io.EOF
	}
	return n, nil
}

// next seals the next segment into out.
func (s *sealer) next() error {
	k, err := io.ReadFull(s.src, s.plain)
	last := false
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		last = true
	default:
		return err
	}
	ad := adMiddle
	if last {
		ad = adLast
	}
	s.out = s.aead.Seal(s.buf[:0], nonce(s.nonce[:], s.seq), s.plain[:k], ad)
	s.seq++
	s.done = last
	return nil
}

// opener reads a sealed blob from src and yields its plaintext; anything
// that does not open is ErrSealed.
type opener struct {
	src    io.Reader
	aead   cipher.AEAD
	seq    uint64
	sealed []byte
	out    []byte
	nonce  [nonceLen]byte
	done   bool // the last segment opened
	err    error
}

func newOpener(src io.Reader, key []byte) (*opener, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &opener{src: src, aead: a, sealed: make([]byte, sealedSegment)}, nil
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.out) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		o.err = o.next()
	}
	n := copy(p, o.out)
	o.out = o.out[n:]
	return n, nil
}

// next opens the next segment: a whole one is a middle segment, a shorter
// one the last, which must end the blob.
func (o *opener) next() error {
	k, err := io.ReadFull(o.src, o.sealed)
	ad := adMiddle
	switch err {
	case nil:
	case io.ErrUnexpectedEOF:
		ad = adLast
	case io.EOF: // whole segments and no last one: cut short
		return ErrSealed
	default:
		return err
	}
	plain, err := o.aead.Open(o.sealed[:0], nonce(o.nonce[:], o.seq), o.sealed[:k], ad)
	if err != nil {
		return ErrSealed
	}
	o.seq++
	o.out = plain
	if k < sealedSegment {
		o.done = true
		if err := atEOF(o.src); err != nil { // nothing after the last segment
			return ErrSealed
		}
	}
	return nil
}

// Seal and Unseal are the format on whole buffers, for tests and tools;
// the Store streams it.

// Seal returns plain sealed under key (32 bytes).
func Seal(plain, key []byte) ([]byte, error) {
	s, err := newSealer(bytes.NewReader(plain), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(s)
}

// Unseal returns the plaintext of sealed under key, or ErrSealed.
func Unseal(sealed, key []byte) ([]byte, error) {
	o, err := newOpener(bytes.NewReader(sealed), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(o)
}
