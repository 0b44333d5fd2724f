package nodeagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// sizer answers a request whose body is a number n with n bytes of a
// repeated pattern (in one emit), and any other with the body's sha256.
type sizer struct{ got chan []byte }

func (sizer) Name() string { return "sizer" }

func (z sizer) Generate(_ context.Context, call backend.Call, emit func([]byte) error) (backend.Result, error) {
	if z.got != nil {
		z.got <- call.Body
	}
	if n, err := strconv.Atoi(string(call.Body)); err == nil {
		return backend.Result{Tokens: 1}, emit(pattern(n))
	}
	sum := sha256.Sum256(call.Body)
	return backend.Result{Tokens: 1}, emit([]byte(hex.EncodeToString(sum[:])))
}

// pattern is n bytes of text with two-byte characters, so a cut in the
// middle of one shows.
func pattern(n int) []byte {
	return []byte(strings.Repeat("aé", n/3+1))[:n]
}

type blobRig struct {
	*rig
	store  *blobs.Store
	stream jetstream.Stream
}

func newBlobRig(t *testing.T) *blobRig {
	r := newRig(t)
	natsembed.BucketsForTest(t, r.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := blobs.OpenStore(ctx, r.nc)
	require.NoError(t, err)
	js, err := jetstream.New(r.nc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+buckets.Blobs)
	require.NoError(t, err)
	return &blobRig{rig: r, store: store, stream: stream}
}

func (r *blobRig) put(body []byte) blobs.Ref {
	r.t.Helper()
	ref, err := r.store.Put(context.Background(), blobs.NewName(blobs.RequestPrefix), bytes.NewReader(body), blobs.DefaultMaxBytes)
	require.NoError(r.t, err)
	return ref
}

func (r *blobRig) msgs() uint64 {
	r.t.Helper()
	info, err := r.stream.Info(context.Background())
	require.NoError(r.t, err)
	return info.State.Msgs
}

func header(k, v string) dispatchOpt { return func(h nats.Header) { h.Set(k, v) } }

// bodyBlob sends ref as the dispatch's body blob, its size as size.
func bodyBlob(ref blobs.Ref, size int64) dispatchOpt {
	return func(h nats.Header) {
		ref.Size = size
		ref.SetBody(h)
	}
}

// The node fetches an out-of-band body before its backend runs and leaves
// the blob to the requester.
func TestNodeFetchesBodyBlob(t *testing.T) {
	r := newBlobRig(t)
	got := make(chan []byte, 1)
	r.agent(testConfig("n1", sizer{got: got}))
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	ref := r.put(body)
	c := r.dispatch("n1", "", bodyBlob(ref, int64(len(body))))
	require.Equal(t, wire.StatusAccepted, c.status)
	a := c.read(t, 10*time.Second)
	require.Nil(t, wire.ErrorFromHeader(a.final.Header))
	sum := sha256.Sum256(body)
	assert.Equal(t, hex.EncodeToString(sum[:]), string(a.final.Data))
	assert.True(t, bytes.Equal(body, <-got), "the backend got the body byte for byte")
	assert.NotZero(t, r.msgs(), "the node does not delete the body: another node may need it after this one")
}

// A bad body reference ends in one final error with a code, never a refusal
// (the router does not read these headers, so every node would refuse).
func TestNodeBodyBlobErrors(t *testing.T) {
	r := newBlobRig(t)
	cfg := testConfig("n1", sizer{})
	cfg.MaxBlobBytes = 4 << 20
	r.agent(cfg)
	big := r.put(make([]byte, 5<<20))
	small := r.put([]byte("abc"))
	otherKey := small
	otherKey.Key = bytes.Repeat([]byte{9}, 32)
	key := header(blobs.HdrBodyKey, blobs.EncodeKey(small.Key))
	for _, tc := range []struct {
		name string
		body string
		opts []dispatchOpt
		code int
		desc string
	}{
		{"not a blob name", "", []dispatchOpt{header(blobs.HdrBody, "req.1"), key}, wire.CodeBadRequest, "header Fed-Body-Blob"},
		{"no key", "", []dispatchOpt{header(blobs.HdrBody, small.Name)}, wire.CodeBadRequest, "header Fed-Body-Key"},
		{"no such blob", "", []dispatchOpt{header(blobs.HdrBody, blobs.NewName(blobs.RequestPrefix)), key}, wire.CodeBadRequest, "is not in fed_blobs"},
		{"over the node's limit, said", "", []dispatchOpt{bodyBlob(big, 5<<20)}, wire.CodeTooLarge, "larger than node n1's limit of 4194304 bytes"},
		{"over the node's limit, not said", "", []dispatchOpt{bodyBlob(big, -1)}, wire.CodeTooLarge, "larger than node n1's limit"},
		{"size does not match", "", []dispatchOpt{bodyBlob(small, 4)}, wire.CodeBadRequest, "does not open with header Fed-Body-Key, or is not the Fed-Body-Size"},
		{"another key", "", []dispatchOpt{bodyBlob(otherKey, 3)}, wire.CodeBadRequest, "does not open with header Fed-Body-Key"},
		{"body and blob both", "x", []dispatchOpt{bodyBlob(small, 3)}, wire.CodeBadRequest, "both a body and header Fed-Body-Blob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.dispatch("n1", tc.body, tc.opts...)
			require.Equal(t, wire.StatusAccepted, c.status)
			a := c.read(t, 5*time.Second)
			we := wire.ErrorFromHeader(a.final.Header)
			require.NotNil(t, we)
			assert.Equal(t, tc.code, we.Code)
			assert.Contains(t, we.Description, tc.desc)
		})
	}
}

// A whole answer too large for one message goes to fed_blobs for a client
// that reads blobs, and is a 413 naming the limit and the SDK for one that
// does not (a plain `nats req`).
func TestNodeStoresLargeAnswer(t *testing.T) {
	r := newBlobRig(t)
	r.agent(testConfig("n1", sizer{}))
	n := 3 << 20
	c := r.dispatch("n1", strconv.Itoa(n), header(blobs.HdrAccept, "true"))
	a := c.read(t, 10*time.Second)
	require.Nil(t, wire.ErrorFromHeader(a.final.Header))
	assert.Empty(t, a.final.Data)
	ref, ok, err := blobs.AnswerRef(a.final.Header)
	require.NoError(t, err)
	require.True(t, ok, "the final names the answer's blob")
	assert.EqualValues(t, n, ref.Size)
	assert.Equal(t, "1", a.final.Header.Get(wire.HdrTokens))
	got, err := r.store.Bytes(context.Background(), ref, blobs.DefaultMaxBytes)
	require.NoError(t, err)
	assert.Equal(t, pattern(n), got)

	c = r.dispatch("n1", strconv.Itoa(n))
	a = c.read(t, 10*time.Second)
	we := wire.ErrorFromHeader(a.final.Header)
	require.NotNil(t, we)
	assert.Equal(t, wire.CodeTooLarge, we.Code)
	assert.Contains(t, we.Description, "does not fit the NATS max_payload of 1048576 bytes")
	assert.Contains(t, we.Description, "Fed-Accept-Blob: true (the fedmesh SDK does)")

	// an answer that fits goes inline as before
	c = r.dispatch("n1", "1000", header(blobs.HdrAccept, "true"))
	a = c.read(t, 5*time.Second)
	assert.Equal(t, pattern(1000), a.final.Data)
	assert.Empty(t, a.final.Header.Get(blobs.HdrAnswer))
}

// A stream piece too large for one message goes as several chunks, in
// order, none cut inside a character.
func TestNodeSplitsLargeChunks(t *testing.T) {
	r := newBlobRig(t)
	r.agent(testConfig("n1", sizer{}))
	n := 5<<20 + 7
	c := r.dispatch("n1", strconv.Itoa(n), stream)
	a := c.read(t, 10*time.Second) // checks Fed-Seq 0, 1, 2, …
	require.Nil(t, wire.ErrorFromHeader(a.final.Header))
	limit := int(blobs.InlineLimit(r.nc.MaxPayload()))
	assert.Len(t, a.chunks, n/limit+1)
	var all []byte
	for _, m := range a.chunks {
		assert.LessOrEqual(t, len(m.Data), limit)
		assert.True(t, utf8.Valid(m.Data), "a chunk of text is valid UTF-8")
		all = append(all, m.Data...)
	}
	assert.Equal(t, pattern(n), all)
	assert.Equal(t, strconv.Itoa(len(a.chunks)), a.final.Header.Get(wire.HdrSeq))
	assert.Zero(t, r.msgs(), "stream chunks never go to fed_blobs")
}

func TestPieceLen(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		max  int
		want int
	}{
		{"fits", []byte("abc"), 3, 3},
		{"ascii", []byte("abcdef"), 4, 4},
		{"before a two-byte char", []byte("abcé"), 4, 3},
		{"before a four-byte char", []byte("a😀b"), 3, 1},
		{"binary", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80}, 4, 4},
		{"no limit", []byte("abc"), 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, pieceLen(tc.b, tc.max))
		})
	}
}
