package client

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// msgSize counts exactly what nats.go checks against max_payload: a message
// of msgSize == limit is published, one byte more is refused.
func TestMsgSizeMatchesNATS(t *testing.T) {
	const limit = 2048
	s, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), MaxPayload: limit})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc := natsembed.ConnectForTest(t, s)
	require.EqualValues(t, limit, nc.MaxPayload())
	cases := []struct {
		name string
		hdr  nats.Header
	}{
		{"no headers", nil},
		{"one header", nats.Header{wire.HdrRequestID: {"r-1"}}},
		{"values trimmed", nats.Header{wire.HdrTenant: {"  acme \t"}, wire.HdrStream: {"true"}}},
		{"repeated values", nats.Header{"X-Many": {"a", "bb", "ccc"}, wire.HdrTimeoutMs: {"30000"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			overhead := msgSize(tc.hdr, nil)
			fits := make([]byte, limit-overhead)
			require.EqualValues(t, limit, msgSize(tc.hdr, fits))
			require.NoError(t, nc.PublishMsg(&nats.Msg{Subject: "size.check", Header: tc.hdr, Data: fits}))
			err := nc.PublishMsg(&nats.Msg{Subject: "size.check", Header: tc.hdr, Data: append(fits, 0)})
			require.ErrorIs(t, err, nats.ErrMaxPayload)
		})
	}
}

// The Client remembers the last len(ring) finished requests: a message for
// one of them is late (counted), for an older one garbage (not counted).
func TestFinishedRingIsBounded(t *testing.T) {
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	c, err := New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	c.ring = make([]string, 2) // before any request: RememberFinished is 4096
	replies := make(chan string, 3)
	sub, err := srv.Subscribe(subject.Default.Infer(wire.CapGenerate), func(m *nats.Msg) {
		replies <- m.Reply
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{}))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, srv.Flush())
	var inboxes []string
	for range 3 {
		_, err := c.Infer(context.Background(), Request{Capability: wire.CapGenerate})
		require.NoError(t, err)
		inboxes = append(inboxes, <-replies)
	}
	c.mu.Lock()
	assert.Len(t, c.finished, 2)
	assert.Empty(t, c.pending)
	c.mu.Unlock()
	late := func(inbox string) {
		r := wire.Reply{Inbox: inbox, Node: "n1"}
		require.NoError(t, srv.PublishMsg(r.Chunk([]byte("late"))))
	}
	late(inboxes[0]) // forgotten: garbage
	late(inboxes[2]) // remembered: late
	natsembed.Eventually(t, 0, func() error {
		return natsembed.Check(c.LateMessages() == 1, "late messages %d", c.LateMessages())
	})
	late(inboxes[1])
	natsembed.Eventually(t, 0, func() error {
		return natsembed.Check(c.LateMessages() == 2, "late messages %d", c.LateMessages())
	})
	assert.True(t, strings.HasPrefix(inboxes[0], c.prefix))
}

// A finished call is remembered (RememberFinished) only to tell late
// messages: it keeps nothing of its request, so 4096 remembered calls do
// not hold 4096 bodies; and a stream read after Close fails at once.
func TestFinishedCallKeepsNoRequest(t *testing.T) {
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	c, err := New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	sub, err := srv.Subscribe(subject.Default.Infer(wire.CapGenerate), func(m *nats.Msg) {
		if m.Header.Get(wire.HdrStream) == "true" {
			return // held: the stream is closed unread
		}
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{}))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, srv.Flush())

	body := make([]byte, 64<<10)
	sent := weak.Make(&body[0])
	resp, err := c.Infer(context.Background(), Request{Capability: wire.CapGenerate, Body: body})
	require.NoError(t, err)
	assert.Equal(t, "n1", resp.Node)
	body = nil
	runtime.GC()
	c.mu.Lock()
	assert.Len(t, c.finished, 1, "remembered")
	c.mu.Unlock()
	assert.Nil(t, sent.Value(), "the finished call keeps the request's body")

	st, err := c.InferStream(context.Background(), Request{Capability: wire.CapGenerate, Body: []byte("hi")})
	require.NoError(t, err)
	st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st.ctx = ctx
	var errs []error
	for _, err := range st.Chunks() {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], ErrCallClosed)
}
