package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// blobEnv is a server with the buckets, a client, and a hand-written node
// (on its own connection) that reads out-of-band bodies as a node agent
// does.
type blobEnv struct {
	srv    *nats.Conn
	c      *client.Client
	store  *blobs.Store // the node's view of fed_blobs
	stream jetstream.Stream
	mu     sync.Mutex
	seen   []nats.Header // every request's headers, as the node got them
	bodies [][]byte      // and its body, inline or fetched
}

func newBlobEnv(t *testing.T, opts ...client.Option) *blobEnv {
	t.Helper()
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	natsembed.BucketsForTest(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := blobs.OpenStore(ctx, srv)
	require.NoError(t, err)
	js, err := jetstream.New(srv)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+buckets.Blobs)
	require.NoError(t, err)
	c, err := client.New(natsembed.ConnectForTest(t, s), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &blobEnv{srv: srv, c: c, store: store, stream: stream}
}

// node serves capability: it fetches the body (inline or from fed_blobs)
// and answers with answer(body) on a goroutine of its own, as a node
// agent's job runs off the subscription.
func (e *blobEnv) node(t *testing.T, capability string, answer func(m *nats.Msg, body []byte, r *wire.Reply)) {
	t.Helper()
	serve(t, e.srv, capability, func(m *nats.Msg) {
		go func() {
			r := &wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
			body := m.Data
			ref, ok, err := blobs.BodyRef(m.Header)
			if err == nil && ok {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				body, err = e.store.Bytes(ctx, ref, blobs.DefaultMaxBytes)
				cancel()
			}
			e.mu.Lock()
			e.seen = append(e.seen, m.Header)
			e.bodies = append(e.bodies, body)
			e.mu.Unlock()
			if err != nil {
				_ = e.srv.PublishMsg(r.Fail(wire.CodeBadRequest, err.Error()))
				return
			}
			answer(m, body, r)
		}()
	})
}

// msgs is what the blob stream holds: 0 once every blob is deleted (not
// even a delete marker stays).
func (e *blobEnv) msgs(t *testing.T) uint64 {
	t.Helper()
	info, err := e.stream.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// emptySoon waits for the blob stream to be empty: the Client deletes a
// blob it is done with in the background, right after the request ends.
func (e *blobEnv) emptySoon(t *testing.T, why string) {
	t.Helper()
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(e.msgs(t) == 0, "%s: %d messages in fed_blobs", why, e.msgs(t))
	})
}

func (e *blobEnv) last() (nats.Header, []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) == 0 {
		return nil, nil
	}
	return e.seen[len(e.seen)-1], e.bodies[len(e.bodies)-1]
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// putAnswer stores a whole answer as a node agent does and returns its
// final.
func (e *blobEnv) putAnswer(t *testing.T, r *wire.Reply, answer []byte) *nats.Msg {
	ref, err := e.store.Put(context.Background(), blobs.NewName(blobs.AnswerPrefix), bytes.NewReader(answer), blobs.DefaultMaxBytes)
	if err != nil {
		t.Errorf("put answer: %v", err)
	}
	m := r.Done(nil, wire.DoneInfo{Tokens: 1})
	ref.SetAnswer(m.Header)
	return m
}

// Bodies and answers of any size up to the cap arrive whole, out of band
// when they do not fit a message; every blob is gone once Infer returns.
func TestBlobRoundTrip(t *testing.T) {
	e := newBlobEnv(t)
	e.node(t, wire.CapTranscribe, func(m *nats.Msg, body []byte, r *wire.Reply) {
		_ = e.srv.PublishMsg(r.Done([]byte(digest(body)), wire.DoneInfo{Tokens: 1}))
	})
	e.node(t, wire.CapSynthesize, func(m *nats.Msg, body []byte, r *wire.Reply) {
		n, _ := strconv.Atoi(string(body))
		answer := bytes.Repeat([]byte("w"), n)
		if n <= 1000 {
			_ = e.srv.PublishMsg(r.Done(answer, wire.DoneInfo{Tokens: 1}))
			return
		}
		_ = e.srv.PublishMsg(e.putAnswer(t, r, answer))
	})
	limit := blobs.InlineLimit(e.srv.MaxPayload())
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		req    func(body []byte) client.Request
		size   int
		inline bool
	}{
		{"small body", func(b []byte) client.Request { return client.Request{Body: b} }, 1000, true},
		{"just inline", func(b []byte) client.Request { return client.Request{Body: b} }, int(limit) - 400, true},
		{"8 MB body", func(b []byte) client.Request { return client.Request{Body: b} }, 8 << 20, false},
		{"8 MB reader, size known", func(b []byte) client.Request {
			return client.Request{BodyReader: bytes.NewReader(b), BodySize: int64(len(b))}
		}, 8 << 20, false},
		{"8 MB reader, size unknown", func(b []byte) client.Request {
			return client.Request{BodyReader: io.MultiReader(bytes.NewReader(b))}
		}, 8 << 20, false},
		{"small reader, size unknown", func(b []byte) client.Request {
			return client.Request{BodyReader: io.MultiReader(bytes.NewReader(b))}
		}, 5000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := randomBytes(t, tc.size)
			req := tc.req(body)
			req.Capability = wire.CapTranscribe
			resp, err := e.c.Infer(ctx, req)
			require.NoError(t, err)
			assert.Equal(t, digest(body), string(resp.Body), "the node got the body byte for byte")
			hdr, _ := e.last()
			_, out, err := blobs.BodyRef(hdr)
			require.NoError(t, err)
			assert.Equal(t, !tc.inline, out, "out of band")
			if out {
				assert.Equal(t, strconv.Itoa(tc.size), hdr.Get(blobs.HdrBodySize))
				assert.NotEmpty(t, hdr.Get(blobs.HdrBodyKey), "sealed with a key of its own")
			}
			assert.Equal(t, "true", hdr.Get(blobs.HdrAccept))
			e.emptySoon(t, "the body's blob is deleted when the request ends")
		})
	}
	for _, n := range []int{10, 8 << 20} {
		resp, err := e.c.Infer(ctx, client.Request{Capability: wire.CapSynthesize, Body: []byte(strconv.Itoa(n))})
		require.NoError(t, err)
		assert.Equal(t, n, len(resp.Body))
		assert.Equal(t, bytes.Repeat([]byte("w"), n), resp.Body)
		e.emptySoon(t, "the answer's blob is deleted once read")
		var w bytes.Buffer
		resp, err = e.c.InferTo(ctx, client.Request{Capability: wire.CapSynthesize, Body: []byte(strconv.Itoa(n))}, &w)
		require.NoError(t, err)
		assert.Nil(t, resp.Body)
		assert.EqualValues(t, n, resp.Size)
		assert.Equal(t, n, w.Len())
		e.emptySoon(t, "InferTo")
	}
	assert.Zero(t, e.c.BlobLeaks())
}

// failingReader fails the test if anything reads it.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("the body was read")
	return 0, io.EOF
}

// The cap is checked before anything is uploaded: a typed 413; a reader
// of unknown size is stopped once it passes the cap and what it sent is
// purged.
func TestBodyCap(t *testing.T) {
	const limit = 3 << 20
	e := newBlobEnv(t, client.WithMaxBody(limit))
	e.node(t, wire.CapTranscribe, func(m *nats.Msg, body []byte, r *wire.Reply) {
		_ = e.srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{}))
	})
	assert.EqualValues(t, limit, e.c.MaxBody())
	for _, tc := range []struct {
		name    string
		req     client.Request
		partial bool
	}{
		{"body", client.Request{Body: make([]byte, limit+1)}, false},
		{"reader of known size, never read", client.Request{BodyReader: failingReader{t}, BodySize: limit + 1}, false},
		{"reader of unknown size", client.Request{BodyReader: io.LimitReader(zeros{}, limit+5<<20)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Capability, tc.req.RequestID = wire.CapTranscribe, "big-1"
			_, err := e.c.Infer(context.Background(), tc.req)
			var tl *client.BodyTooLargeError
			require.ErrorAs(t, err, &tl)
			assert.Equal(t, tc.partial, tl.Partial)
			assert.LessOrEqual(t, tl.Size, int64(limit+blobs.SegmentSize+1), "read no further than the cap")
			assert.EqualValues(t, limit, tl.Limit)
			assert.Equal(t, "big-1", tl.RequestID)
			var we *wire.Error
			require.ErrorAs(t, err, &we, "a *wire.Error too")
			assert.Equal(t, wire.CodeTooLarge, we.Code)
			assert.Contains(t, we.Description, "larger than the limit of 3145728 bytes")
			natsembed.Eventually(t, 2*time.Second, func() error {
				return natsembed.Check(e.msgs(t) == 0, "%d messages in fed_blobs", e.msgs(t))
			})
		})
	}
	e.mu.Lock()
	assert.Empty(t, e.seen, "no request reached the node")
	e.mu.Unlock()
	// exactly the cap is carried
	_, err := e.c.Infer(context.Background(), client.Request{Capability: wire.CapTranscribe, Body: make([]byte, limit)})
	require.NoError(t, err)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A caller that gives up (cancel, deadline) or gets an error leaves
// nothing in the bucket: its body blob is deleted, and an answer blob that
// comes after it gave up is deleted as it is dropped.
func TestBlobCleanup(t *testing.T) {
	e := newBlobEnv(t)
	release := make(chan struct{})
	e.node(t, wire.CapTranscribe, func(m *nats.Msg, body []byte, r *wire.Reply) {
		switch m.Header.Get("X-Test") {
		case "fail":
			_ = e.srv.PublishMsg(r.Fail(wire.CodeInternal, "backend down"))
		case "late-answer":
			<-release
			_ = e.srv.PublishMsg(e.putAnswer(t, r, make([]byte, 2<<20)))
		}
	})
	body := randomBytes(t, 3<<20)
	infer := func(ctx context.Context, test string) error {
		_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapTranscribe, Body: body, Header: nats.Header{"X-Test": {test}}})
		return err
	}
	t.Run("error", func(t *testing.T) {
		err := infer(context.Background(), "fail")
		assert.Equal(t, wire.CodeInternal, wire.CodeOf(err))
		e.emptySoon(t, "error")
	})
	t.Run("cancel, then a late answer", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			natsembed.Eventually(t, 5*time.Second, func() error {
				h, _ := e.last()
				return natsembed.Check(h != nil && h.Get("X-Test") == "late-answer", "not at the node yet")
			})
			cancel()
		}()
		err := infer(ctx, "late-answer")
		require.ErrorIs(t, err, context.Canceled)
		e.emptySoon(t, "the body is deleted when the request ends")
		close(release)
		natsembed.Eventually(t, 5*time.Second, func() error {
			return natsembed.Check(e.c.LateMessages() == 1, "late %d", e.c.LateMessages())
		})
		natsembed.Eventually(t, 5*time.Second, func() error {
			return natsembed.Check(e.msgs(t) == 0, "%d messages in fed_blobs", e.msgs(t))
		})
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := infer(ctx, "silent")
		assert.Equal(t, wire.CodeTimeout, wire.CodeOf(err))
		e.emptySoon(t, "deadline")
	})
	t.Run("cancelled mid-upload", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := &slowReader{after: 4, cancel: cancel}
		_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapTranscribe, BodyReader: r, BodySize: 32 << 20})
		require.True(t, errors.Is(err, context.Canceled), "got %v", err)
		natsembed.Eventually(t, 2*time.Second, func() error {
			return natsembed.Check(e.msgs(t) == 0, "%d messages in fed_blobs", e.msgs(t))
		})
	})
	assert.Zero(t, e.c.BlobLeaks())
}

// slowReader yields zeros, and cancels its request after a few reads.
type slowReader struct {
	reads, after int
	cancel       func()
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.reads++
	if s.reads == s.after {
		s.cancel()
	}
	clear(p)
	return len(p), nil
}

// A body uploaded before its request (Client.Upload) arrives byte for byte
// and is deleted when its request ends; one no request took is deleted by
// Discard, and one a request could not take (a bad request) at once.
func TestUpload(t *testing.T) {
	e := newBlobEnv(t, client.WithMaxBody(4<<20))
	e.node(t, wire.CapTranscribe, func(m *nats.Msg, body []byte, r *wire.Reply) {
		_ = e.srv.PublishMsg(r.Done([]byte(digest(body)), wire.DoneInfo{Tokens: 1}))
	})
	ctx := context.Background()
	body := randomBytes(t, 3<<20)
	up, err := e.c.Upload(ctx, "up-1", bytes.NewReader(body))
	require.NoError(t, err)
	assert.EqualValues(t, len(body), up.Size())
	assert.NotZero(t, e.msgs(t), "stored before the request")
	resp, err := e.c.Infer(ctx, client.Request{Capability: wire.CapTranscribe, RequestID: "up-1", Upload: up})
	require.NoError(t, err)
	assert.Equal(t, digest(body), string(resp.Body))
	hdr, _ := e.last()
	assert.Equal(t, strconv.Itoa(len(body)), hdr.Get(blobs.HdrBodySize))
	e.emptySoon(t, "deleted when the request ended")

	t.Run("used twice", func(t *testing.T) {
		_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapTranscribe, Upload: up})
		assert.Equal(t, wire.CodeBadRequest, wire.CodeOf(err))
		assert.Contains(t, err.Error(), "used or discarded already")
	})
	t.Run("discarded", func(t *testing.T) {
		up, err := e.c.Upload(ctx, "up-2", bytes.NewReader(body[:5000]))
		require.NoError(t, err)
		assert.NotZero(t, e.msgs(t))
		up.Discard()
		up.Discard() // idempotent
		assert.Zero(t, e.msgs(t))
	})
	t.Run("request refused before it is sent", func(t *testing.T) {
		up, err := e.c.Upload(ctx, "up-3", bytes.NewReader(body))
		require.NoError(t, err)
		_, err = e.c.Infer(ctx, client.Request{Capability: "no such capability", Upload: up})
		assert.Equal(t, wire.CodeBadRequest, wire.CodeOf(err))
		assert.Zero(t, e.msgs(t), "the request deleted the upload it could not send")
	})
	t.Run("over the cap", func(t *testing.T) {
		_, err := e.c.Upload(ctx, "up-4", io.LimitReader(zeros{}, 6<<20))
		var tl *client.BodyTooLargeError
		require.ErrorAs(t, err, &tl)
		assert.True(t, tl.Partial)
		natsembed.Eventually(t, 2*time.Second, func() error {
			return natsembed.Check(e.msgs(t) == 0, "%d messages in fed_blobs", e.msgs(t))
		})
	})
	t.Run("reader fails", func(t *testing.T) {
		boom := errors.New("connection reset by caller")
		_, err := e.c.Upload(ctx, "up-5", io.MultiReader(bytes.NewReader(body), errorReader{boom}))
		require.ErrorIs(t, err, boom, "the reader's own error, for the caller to classify")
		natsembed.Eventually(t, 2*time.Second, func() error {
			return natsembed.Check(e.msgs(t) == 0, "%d messages in fed_blobs", e.msgs(t))
		})
	})
	assert.Zero(t, e.c.BlobLeaks())
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

// InferAnswer shows the final (headers, size) before the first byte is
// written, inline or out of band, and deletes an answer blob whether or not
// it was read.
func TestInferAnswer(t *testing.T) {
	e := newBlobEnv(t)
	e.node(t, wire.CapSynthesize, func(m *nats.Msg, body []byte, r *wire.Reply) {
		n, _ := strconv.Atoi(string(body))
		answer := bytes.Repeat([]byte("w"), n)
		if n <= 1000 {
			d := r.Done(answer, wire.DoneInfo{Tokens: 1})
			d.Header.Set(wire.HdrContentType, "audio/wav")
			_ = e.srv.PublishMsg(d)
			return
		}
		d := e.putAnswer(t, r, answer)
		d.Header.Set(wire.HdrContentType, "audio/wav")
		_ = e.srv.PublishMsg(d)
	})
	ctx := context.Background()
	for _, n := range []int{10, 8 << 20} {
		var w bytes.Buffer
		resp, err := e.c.InferAnswer(ctx, client.Request{Capability: wire.CapSynthesize, Body: []byte(strconv.Itoa(n))},
			func(r *client.Response) (io.Writer, error) {
				assert.Equal(t, "audio/wav", r.Header.Get(wire.HdrContentType))
				assert.EqualValues(t, n, r.Size, "the size before the first byte")
				assert.Zero(t, w.Len())
				return &w, nil
			})
		require.NoError(t, err)
		assert.EqualValues(t, n, resp.Size)
		assert.Equal(t, bytes.Repeat([]byte("w"), n), w.Bytes())
		e.emptySoon(t, "the answer's blob is deleted once read")
	}
	refuse := errors.New("client went away")
	_, err := e.c.InferAnswer(ctx, client.Request{Capability: wire.CapSynthesize, Body: []byte(strconv.Itoa(3 << 20))},
		func(*client.Response) (io.Writer, error) { return nil, refuse })
	require.ErrorIs(t, err, refuse)
	assert.Zero(t, e.msgs(t), "an answer blob nobody reads is deleted")
	assert.Zero(t, e.c.BlobLeaks())
}
