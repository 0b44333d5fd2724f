package blobs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// open starts a server with the buckets (blob TTL ttl; 0: the default)
// and opens the store on a client connection.
func open(t *testing.T, ttl time.Duration) (*blobs.Store, jetstream.Stream) {
	t.Helper()
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := buckets.EnsureConn(ctx, nc, buckets.Options{BlobTTL: ttl})
	require.NoError(t, err)
	st, err := blobs.OpenStore(ctx, nc)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+buckets.Blobs)
	require.NoError(t, err)
	return st, stream
}

// msgs is how many messages the blob stream holds: 0 is an empty bucket,
// not even a delete marker left.
func msgs(t *testing.T, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestPutGetDeleteLeavesNothing(t *testing.T) {
	store, stream := open(t, 0)
	ctx := context.Background()
	for _, size := range []int{0, 1, blobs.SegmentSize, blobs.ChunkSize, 3*blobs.ChunkSize + 17} {
		body := random(t, size)
		name := blobs.NewName(blobs.RequestPrefix)
		ref, err := store.Put(ctx, name, bytes.NewReader(body), blobs.DefaultMaxBytes)
		require.NoError(t, err, size)
		assert.EqualValues(t, size, ref.Size)
		assert.Equal(t, name, ref.Name)
		got, err := store.Bytes(ctx, ref, int64(size))
		require.NoError(t, err, size)
		assert.True(t, bytes.Equal(body, got), "size %d: the bytes come back", size)
		var w bytes.Buffer
		wn, err := store.WriteTo(ctx, ref, &w, int64(size))
		require.NoError(t, err)
		assert.EqualValues(t, size, wn)
		assert.True(t, bytes.Equal(body, w.Bytes()))
		other := ref
		other.Key = bytes.Repeat([]byte{7}, 32)
		_, err = store.Bytes(ctx, other, int64(size))
		assert.ErrorIs(t, err, blobs.ErrSealed, "the name alone gives nothing")
		require.NoError(t, store.Delete(ctx, name))
		assert.Zero(t, msgs(t, stream), "size %d: chunks and meta purged", size)
		_, err = store.Bytes(ctx, ref, int64(size))
		assert.ErrorIs(t, err, blobs.ErrNotFound)
		assert.NoError(t, store.Delete(ctx, name), "deleting a missing blob is no error")
	}
}

func TestGetOverLimitReadsNothing(t *testing.T) {
	store, _ := open(t, 0)
	ctx := context.Background()
	ref, err := store.Put(ctx, blobs.NewName(blobs.AnswerPrefix), bytes.NewReader(random(t, 1000)), blobs.DefaultMaxBytes)
	require.NoError(t, err)
	_, err = store.Bytes(ctx, ref, 999)
	var tl *blobs.TooLargeError
	require.ErrorAs(t, err, &tl)
	assert.EqualValues(t, 1000, tl.Size)
	assert.EqualValues(t, 999, tl.Limit)
	assert.False(t, tl.Partial)
}

// endless yields zeros for ever, and says when it has been read n times.
type endless struct {
	reads int
	at    int
	hit   chan struct{}
}

func (e *endless) Read(p []byte) (int, error) {
	e.reads++
	if e.reads == e.at {
		close(e.hit)
	}
	clear(p)
	return len(p), nil
}

// An upload over the cap, or whose context ends, stops and purges what it
// sent: nothing stays until the TTL.
func TestPutStopsAndPurges(t *testing.T) {
	store, stream := open(t, 0)
	t.Run("over the cap", func(t *testing.T) {
		limit := int64(5*blobs.ChunkSize + 3)
		ref, err := store.Put(context.Background(), blobs.NewName(blobs.RequestPrefix), &endless{}, limit)
		var tl *blobs.TooLargeError
		require.ErrorAs(t, err, &tl)
		assert.True(t, tl.Partial)
		assert.Greater(t, ref.Size, limit)
		assert.LessOrEqual(t, ref.Size, limit+blobs.SegmentSize, "it stops reading at the cap")
		assert.Contains(t, tl.Error(), "request body is larger than the limit of")
		assert.Zero(t, msgs(t, stream))
	})
	t.Run("cancelled mid-upload", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := &endless{at: 4, hit: make(chan struct{})}
		go func() { <-r.hit; cancel() }()
		_, err := store.Put(ctx, blobs.NewName(blobs.RequestPrefix), r, blobs.DefaultMaxBytes)
		require.ErrorIs(t, err, context.Canceled)
		natsembed.Eventually(t, 2*time.Second, func() error {
			return natsembed.Check(msgs(t, stream) == 0, "%d messages left", msgs(t, stream))
		})
	})
	t.Run("reader fails", func(t *testing.T) {
		boom := errors.New("boom")
		r := io.MultiReader(bytes.NewReader(random(t, 2*blobs.ChunkSize)), iotestErr{boom})
		_, err := store.Put(context.Background(), blobs.NewName(blobs.RequestPrefix), r, blobs.DefaultMaxBytes)
		require.ErrorIs(t, err, boom)
		natsembed.Eventually(t, 2*time.Second, func() error {
			return natsembed.Check(msgs(t, stream) == 0, "%d messages left", msgs(t, stream))
		})
	})
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// What nobody deletes expires with the bucket's TTL.
func TestBlobsExpire(t *testing.T) {
	store, stream := open(t, time.Second)
	ref, err := store.Put(context.Background(), blobs.NewName(blobs.AnswerPrefix), bytes.NewReader(random(t, 2*blobs.ChunkSize)), blobs.DefaultMaxBytes)
	require.NoError(t, err)
	require.NotZero(t, msgs(t, stream))
	natsembed.Eventually(t, 5*time.Second, func() error {
		return natsembed.Check(msgs(t, stream) == 0, "%d messages left", msgs(t, stream))
	})
	_, err = store.Bytes(context.Background(), ref, blobs.DefaultMaxBytes)
	assert.ErrorIs(t, err, blobs.ErrNotFound)
}

func TestNames(t *testing.T) {
	a, b := blobs.NewName(blobs.RequestPrefix), blobs.NewName(blobs.RequestPrefix)
	assert.NotEqual(t, a, b)
	assert.True(t, blobs.CheckName(blobs.RequestPrefix, a))
	assert.False(t, blobs.CheckName(blobs.AnswerPrefix, a), "a request name is no answer name")
	for _, bad := range []string{"", "req.", "req.short", a + "x", "req.AAAAAAAAAAAAAAAAAAAA.A", "req.AAAAAAAAAAAAAAAAAAAA*A", "REQ." + a[4:]} {
		assert.False(t, blobs.CheckName(blobs.RequestPrefix, bad), bad)
	}
}

func TestInlineLimit(t *testing.T) {
	for _, tc := range []struct{ maxPayload, want int64 }{
		{1 << 20, 1<<20 - blobs.Headroom},
		{8 << 20, 8<<20 - blobs.Headroom},
		{2 * blobs.Headroom, blobs.Headroom},
		{1000, 500},
	} {
		assert.Equal(t, tc.want, blobs.InlineLimit(tc.maxPayload), tc.maxPayload)
	}
}

func TestBodyRef(t *testing.T) {
	name := blobs.NewName(blobs.RequestPrefix)
	key := bytes.Repeat([]byte{1}, 32)
	k := blobs.EncodeKey(key)
	for _, tc := range []struct {
		name string
		h    nats.Header
		ok   bool
		ref  blobs.Ref
		bad  string // the header a 400 names
	}{
		{"inline", nats.Header{}, false, blobs.Ref{}, ""},
		{"nil header", nil, false, blobs.Ref{}, ""},
		{"name and key", nats.Header{blobs.HdrBody: {name}, blobs.HdrBodyKey: {k}}, true, blobs.Ref{Name: name, Size: -1, Key: key}, ""},
		{"name, size and key", nats.Header{blobs.HdrBody: {name}, blobs.HdrBodySize: {"8388608"}, blobs.HdrBodyKey: {k}}, true,
			blobs.Ref{Name: name, Size: 8 << 20, Key: key}, ""},
		{"no key", nats.Header{blobs.HdrBody: {name}}, false, blobs.Ref{}, blobs.HdrBodyKey},
		{"short key", nats.Header{blobs.HdrBody: {name}, blobs.HdrBodyKey: {k[:40]}}, false, blobs.Ref{}, blobs.HdrBodyKey},
		{"size only", nats.Header{blobs.HdrBodySize: {"12"}}, false, blobs.Ref{}, blobs.HdrBody},
		{"answer name", nats.Header{blobs.HdrBody: {blobs.NewName(blobs.AnswerPrefix)}, blobs.HdrBodyKey: {k}}, false, blobs.Ref{}, blobs.HdrBody},
		{"guessable", nats.Header{blobs.HdrBody: {"req.1"}, blobs.HdrBodyKey: {k}}, false, blobs.Ref{}, blobs.HdrBody},
		{"negative size", nats.Header{blobs.HdrBody: {name}, blobs.HdrBodySize: {"-1"}, blobs.HdrBodyKey: {k}}, false, blobs.Ref{}, blobs.HdrBodySize},
		{"size not a number", nats.Header{blobs.HdrBody: {name}, blobs.HdrBodySize: {"8MB"}, blobs.HdrBodyKey: {k}}, false, blobs.Ref{}, blobs.HdrBodySize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, ok, err := blobs.BodyRef(tc.h)
			if tc.bad != "" {
				var we *wire.Error
				require.ErrorAs(t, err, &we)
				assert.Equal(t, wire.CodeBadRequest, we.Code)
				assert.True(t, strings.HasPrefix(we.Description, "header "+tc.bad+":"), we.Description)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.ref, ref)
			if ok { // what SetBody writes reads back the same
				h := nats.Header{}
				ref.SetBody(h)
				back, ok, err := blobs.BodyRef(h)
				require.NoError(t, err)
				assert.True(t, ok)
				assert.Equal(t, ref, back)
			}
		})
	}
}

// BodyRef and AnswerRef read headers anyone may send: they never panic,
// and what they accept is a name NewName could make and a size ≥ 0.
func FuzzRef(f *testing.F) {
	k := blobs.EncodeKey(make([]byte, 32))
	f.Add(blobs.NewName(blobs.RequestPrefix), "123", k)
	f.Add("req.AAAAAAAAAAAAAAAAAAAAAA", "", k)
	f.Add("", "5", "")
	f.Add("ans.\x00\xff", "-0", "AAAA")
	f.Add("req.AAAAAAAAAAAAAAAAAAAAAA", "99999999999999999999999", k+"=")
	f.Fuzz(func(t *testing.T, name, size, key string) {
		for _, read := range []struct {
			prefix, nameHdr, sizeHdr, keyHdr string
			parse                            func(nats.Header) (blobs.Ref, bool, error)
		}{
			{blobs.RequestPrefix, blobs.HdrBody, blobs.HdrBodySize, blobs.HdrBodyKey, blobs.BodyRef},
			{blobs.AnswerPrefix, blobs.HdrAnswer, blobs.HdrAnswerSize, blobs.HdrAnswerKey, blobs.AnswerRef},
		} {
			h := nats.Header{}
			h.Set(read.nameHdr, name)
			h.Set(read.sizeHdr, size)
			h.Set(read.keyHdr, key)
			ref, ok, err := read.parse(h)
			if err != nil {
				if ok {
					t.Fatal("ok with an error")
				}
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != wire.CodeBadRequest {
					t.Fatalf("not a 400: %v", err)
				}
				continue
			}
			if !ok {
				if name != "" || size != "" || key != "" {
					t.Fatalf("%q %q %q ignored", name, size, key)
				}
				continue
			}
			if len(ref.Key) != 32 {
				t.Fatalf("accepted a key of %d bytes", len(ref.Key))
			}
			if !blobs.CheckName(read.prefix, ref.Name) || ref.Name != name {
				t.Fatalf("accepted name %q", ref.Name)
			}
			if ref.Size < -1 || (size == "" && ref.Size != -1) {
				t.Fatalf("size %d from %q", ref.Size, size)
			}
		}
	})
}

// The sealed format: every size comes back; another key, a changed byte,
// a cut (at a segment boundary or not) or something appended fails to
// open.
func TestSealUnseal(t *testing.T) {
	key := random(t, 32)
	for _, n := range []int{0, 1, blobs.SegmentSize - 1, blobs.SegmentSize, blobs.SegmentSize + 1, 3 * blobs.SegmentSize} {
		plain := random(t, n)
		sealed, err := blobs.Seal(plain, key)
		require.NoError(t, err)
		assert.EqualValues(t, blobs.SealedSize(int64(n)), len(sealed), n)
		assert.False(t, bytes.Contains(sealed, plain) && n > 16, "sealed bytes hide the plaintext")
		got, err := blobs.Unseal(sealed, key)
		require.NoError(t, err, n)
		assert.True(t, bytes.Equal(plain, got), n)

		_, err = blobs.Unseal(sealed, random(t, 32))
		assert.ErrorIs(t, err, blobs.ErrSealed, "another key")
		changed := bytes.Clone(sealed)
		changed[len(changed)/2] ^= 1
		_, err = blobs.Unseal(changed, key)
		assert.ErrorIs(t, err, blobs.ErrSealed, "a changed byte")
		_, err = blobs.Unseal(append(bytes.Clone(sealed), 0), key)
		assert.ErrorIs(t, err, blobs.ErrSealed, "a byte appended")
		if n >= blobs.SegmentSize {
			_, err = blobs.Unseal(sealed[:blobs.SegmentSize+16], key)
			assert.ErrorIs(t, err, blobs.ErrSealed, "cut at a segment boundary")
		}
		_, err = blobs.Unseal(sealed[:len(sealed)-1], key)
		assert.ErrorIs(t, err, blobs.ErrSealed, "cut short")
	}
}

// Unseal reads what anyone may have written to the bucket: it never
// panics, and what it returns seals back to the same bytes.
func FuzzUnseal(f *testing.F) {
	key := bytes.Repeat([]byte{3}, 32)
	for _, n := range []int{0, 5, blobs.SegmentSize + 3} {
		s, err := blobs.Seal(bytes.Repeat([]byte("x"), n), key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 17))
	f.Fuzz(func(t *testing.T, sealed []byte) {
		plain, err := blobs.Unseal(sealed, key)
		if err != nil {
			if !errors.Is(err, blobs.ErrSealed) {
				t.Fatalf("not ErrSealed: %v", err)
			}
			return
		}
		again, err := blobs.Seal(plain, key)
		if err != nil || !bytes.Equal(again, sealed) {
			t.Fatalf("opened %d bytes that do not seal back to the input", len(plain))
		}
	})
}

// TestStoredTamperedFails: a stored blob changed, reordered or cut short
// does not open through Bytes nor WriteTo (which open it each their own
// way), whether or not the message said its size.
func TestStoredTamperedFails(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	ctx := context.Background()
	_, err := buckets.EnsureConn(ctx, nc, buckets.Options{})
	require.NoError(t, err)
	store, err := blobs.OpenStore(ctx, nc)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	obs, err := js.ObjectStore(ctx, buckets.Blobs)
	require.NoError(t, err)

	const seg = blobs.SegmentSize + 16
	key := bytes.Repeat([]byte{3}, 32)
	plain := random(t, 3*blobs.SegmentSize+17)
	sealed, err := blobs.Seal(plain, key)
	require.NoError(t, err)
	swapped := append([]byte(nil), sealed...)
	copy(swapped[seg:2*seg], sealed[2*seg:3*seg])
	copy(swapped[2*seg:3*seg], sealed[seg:2*seg])
	for _, tc := range []struct {
		name   string
		stored []byte
		ok     bool
	}{
		{"as sealed", sealed, true},
		{"a byte changed in a middle segment", func() []byte { b := bytes.Clone(sealed); b[seg+5] ^= 1; return b }(), false},
		{"a byte changed in the last segment", func() []byte { b := bytes.Clone(sealed); b[len(b)-3] ^= 1; return b }(), false},
		{"two segments swapped", swapped, false},
		{"the last segment dropped", sealed[:3*seg], false},
		{"cut inside the last segment", sealed[:len(sealed)-1], false},
	} {
		for _, size := range []int64{-1, int64(len(plain))} {
			name := blobs.NewName(blobs.RequestPrefix)
			_, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(tc.stored))
			require.NoError(t, err)
			ref := blobs.Ref{Name: name, Size: size, Key: key}
			got, err := store.Bytes(ctx, ref, blobs.DefaultMaxBytes)
			var w bytes.Buffer
			_, werr := store.WriteTo(ctx, ref, &w, blobs.DefaultMaxBytes)
			if tc.ok {
				require.NoError(t, err, tc.name)
				require.NoError(t, werr, tc.name)
				assert.True(t, bytes.Equal(plain, got), tc.name)
				assert.True(t, bytes.Equal(plain, w.Bytes()), tc.name)
			} else {
				assert.ErrorIs(t, err, blobs.ErrSealed, "%s (size %d): Bytes", tc.name, size)
				assert.ErrorIs(t, werr, blobs.ErrSealed, "%s (size %d): WriteTo", tc.name, size)
			}
			require.NoError(t, store.Delete(ctx, name))
		}
	}
}
