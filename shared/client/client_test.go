package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// serve answers fed.infer.<capability> as a router+node would, with fn
// deciding what each request gets.
func serve(t *testing.T, nc *nats.Conn, capability string, fn func(m *nats.Msg)) {
	t.Helper()
	sub, err := nc.Subscribe(subject.Default.Infer(capability), fn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
}

func setup(t *testing.T) (*nats.Conn, *client.Client) {
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return srv, c
}

func TestInferWhole(t *testing.T) {
	srv, c := setup(t)
	var gotHdr nats.Header
	serve(t, srv, "generate", func(m *nats.Msg) {
		gotHdr = m.Header
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done(append([]byte("echo: "), m.Data...), wire.DoneInfo{Tokens: 2, LatencyMs: 1.5}))
	})
	gpu := false
	resp, err := c.Infer(context.Background(), client.Request{Capability: "generate", Body: []byte("hi"),
		Tenant: "acme", Privacy: "confidential", Regions: []string{"eu", "us"}, PreferGPU: &gpu})
	require.NoError(t, err)
	assert.Equal(t, "echo: hi", string(resp.Body))
	assert.Equal(t, "n1", resp.Node)
	assert.Equal(t, 2, resp.Tokens)
	assert.InDelta(t, 1.5, resp.LatencyMs, 1e-9)
	assert.NotEmpty(t, resp.RequestID)
	assert.Equal(t, resp.RequestID, gotHdr.Get(wire.HdrRequestID))
	assert.Equal(t, "acme", gotHdr.Get(wire.HdrTenant))
	assert.Equal(t, "confidential", gotHdr.Get(wire.HdrPrivacy))
	assert.Equal(t, "eu,us", gotHdr.Get(wire.HdrRegions))
	assert.Equal(t, "false", gotHdr.Get(wire.HdrPreferGPU))
	assert.NotEmpty(t, gotHdr.Get(wire.HdrTimeoutMs))
	spec, err := wire.ParseSpec(gotHdr)
	require.NoError(t, err, "what the SDK writes, the router can read")
	assert.Equal(t, []string{"eu", "us"}, spec.Regions)
}

func TestInferStreamInOrder(t *testing.T) {
	srv, c := setup(t)
	serve(t, srv, "generate", func(m *nats.Msg) {
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		assert.Equal(t, "true", m.Header.Get(wire.HdrStream))
		for i := 0; i < 50; i++ {
			_ = srv.PublishMsg(r.Chunk([]byte(fmt.Sprintf("t%d ", i))))
		}
		_ = srv.PublishMsg(r.Done(nil, wire.DoneInfo{Tokens: 50}))
	})
	st, err := c.InferStream(context.Background(), client.Request{Capability: "generate", Body: []byte("x")})
	require.NoError(t, err)
	defer st.Close()
	var want, got string
	n := 0
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		assert.Equal(t, n, ch.Seq)
		assert.Equal(t, "n1", ch.Node)
		got += string(ch.Data)
		want += fmt.Sprintf("t%d ", n)
		n++
	}
	assert.Equal(t, 50, n)
	assert.Equal(t, want, got)
	res, err := st.Result()
	require.NoError(t, err)
	assert.Equal(t, 50, res.Tokens)
	assert.Equal(t, want, string(res.Body))
}

func TestKeepsFirstNodeDropsDuplicate(t *testing.T) {
	srv, c := setup(t)
	dupes := make(chan record.Outcome, 4)
	sub, err := srv.Subscribe(subject.Default.ClientDuplicateAll(), func(m *nats.Msg) {
		var o record.Outcome
		if json.Unmarshal(m.Data, &o) == nil {
			dupes <- o
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	serve(t, srv, "generate", func(m *nats.Msg) {
		id := m.Header.Get(wire.HdrRequestID)
		a := wire.Reply{Inbox: m.Reply, RequestID: id, Node: "first"}
		b := wire.Reply{Inbox: m.Reply, RequestID: id, Node: "second"}
		_ = srv.PublishMsg(a.Chunk([]byte("A")))
		_ = srv.PublishMsg(b.Chunk([]byte("B")))
		_ = srv.PublishMsg(b.Done(nil, wire.DoneInfo{}))
		_ = srv.PublishMsg(a.Chunk([]byte("A")))
		_ = srv.PublishMsg(a.Done(nil, wire.DoneInfo{Tokens: 2}))
	})
	st, err := c.InferStream(context.Background(), client.Request{Capability: "generate"})
	require.NoError(t, err)
	for _, err := range st.Chunks() {
		require.NoError(t, err)
	}
	res, err := st.Result()
	require.NoError(t, err)
	st.Close()
	assert.Equal(t, "AA", string(res.Body))
	assert.Equal(t, "first", res.Node)
	assert.EqualValues(t, 1, c.Duplicates())
	select {
	case o := <-dupes:
		assert.Equal(t, record.OutcomeDuplicate, o.Kind)
		assert.Equal(t, "second", o.NodeID)
	case <-time.After(2 * time.Second):
		t.Fatal("no duplicate outcome published")
	}
}

func TestErrors(t *testing.T) {
	srv, c := setup(t)
	serve(t, srv, "code", func(m *nats.Msg) {
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID)}
		_ = srv.PublishMsg(r.Fail(wire.CodePrivacy, "no node cleared for restricted"))
	})
	serve(t, srv, "embed", func(m *nats.Msg) {
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n"}
		_ = srv.PublishMsg(r.Chunk([]byte("0")))
		r.Chunk(nil) // skip seq 1: a lost message
		_ = srv.PublishMsg(r.Done(nil, wire.DoneInfo{}))
	})
	cancels := make(chan string, 1)
	cs, err := srv.Subscribe(subject.Default.CancelAll(), func(m *nats.Msg) { cancels <- subject.LastToken(m.Subject) })
	require.NoError(t, err)
	defer cs.Unsubscribe()
	serve(t, srv, "transcribe", func(m *nats.Msg) {}) // accepts and never answers
	require.NoError(t, srv.Flush())

	cases := []struct {
		name string
		req  client.Request
		ctx  time.Duration
		code int
	}{
		{"router error", client.Request{Capability: "code"}, 5 * time.Second, wire.CodePrivacy},
		{"no router", client.Request{Capability: "imagegen"}, 5 * time.Second, wire.CodeNoCapacity},
		{"seq gap", client.Request{Capability: "embed"}, 5 * time.Second, wire.CodeInternal},
		{"deadline", client.Request{Capability: "transcribe", RequestID: "slow-1"}, 200 * time.Millisecond, wire.CodeTimeout},
		{"bad capability", client.Request{Capability: "chat"}, time.Second, wire.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			start := time.Now()
			_, err := c.Infer(ctx, tc.req)
			var we *wire.Error
			require.True(t, errors.As(err, &we), "got %v", err)
			assert.Equal(t, tc.code, we.Code, we.Description)
			assert.Less(t, time.Since(start), tc.ctx+time.Second)
		})
	}
	select {
	case id := <-cancels:
		assert.Equal(t, "slow-1", id, "a timed-out request is cancelled in the mesh")
	case <-time.After(2 * time.Second):
		t.Fatal("no cancel published on deadline")
	}
}

// Many concurrent requests share the one reply subscription.
func TestOneReplySubscription(t *testing.T) {
	srv, c := setup(t)
	serve(t, srv, "generate", func(m *nats.Msg) {
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n"}
		_ = srv.PublishMsg(r.Done(m.Data, wire.DoneInfo{}))
	})
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf("req-%d", i)
			resp, err := c.Infer(context.Background(), client.Request{Capability: "generate", Body: []byte(body)})
			if assert.NoError(t, err) {
				assert.Equal(t, body, string(resp.Body), "answers are not crossed")
			}
		}(i)
	}
	wg.Wait()
}

func TestCloseFailsInFlight(t *testing.T) {
	srv, c := setup(t)
	serve(t, srv, "generate", func(m *nats.Msg) {}) // takes the request, never answers
	done := make(chan error, 1)
	go func() {
		_, err := c.Infer(context.Background(), client.Request{Capability: "generate"})
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, c.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, client.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Infer did not end after Close")
	}
}

// WithTenant puts the tenant in the subject (the secured form) and answers
// to the connection's own inbox prefix; a tenant that is no id is 400.
func TestWithTenant(t *testing.T) {
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	nc, err := nats.Connect(s.ClientURL(), nats.CustomInboxPrefix("_INBOX.acme"))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc, client.WithTenant("acme"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	got := make(chan *nats.Msg, 1)
	sub, err := srv.Subscribe("fed.infer.generate.*", func(m *nats.Msg) {
		got <- m
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{Tokens: 1}))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, srv.Flush())
	resp, err := c.Infer(context.Background(), client.Request{Capability: wire.CapGenerate, Body: []byte("hi")})
	require.NoError(t, err)
	assert.Equal(t, "ok", string(resp.Body))
	m := <-got
	assert.Equal(t, "fed.infer.generate.acme", m.Subject)
	assert.Equal(t, "acme", m.Header.Get(wire.HdrTenant))
	assert.True(t, strings.HasPrefix(m.Reply, "_INBOX.acme."), "reply %s", m.Reply)

	_, err = c.Infer(context.Background(), client.Request{Capability: wire.CapGenerate, Tenant: "a.b", Body: []byte("hi")})
	var we *wire.Error
	require.True(t, errors.As(err, &we))
	assert.Equal(t, wire.CodeBadRequest, we.Code)
}

// Reply tokens are random: whoever saw one reply subject (the node that
// served that request) cannot tell the next one. nuids of one process
// share their first 12 characters and step by at most 333, so this fails
// with nuid tokens.
func TestReplyTokensUnguessable(t *testing.T) {
	s := natsembed.StartForTest(t)
	srv := natsembed.ConnectForTest(t, s)
	nc := natsembed.ConnectForTest(t, s)
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	replies := make(chan string, 8)
	sub, err := srv.Subscribe("fed.infer.generate", func(m *nats.Msg) {
		replies <- m.Reply
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done([]byte("ok"), wire.DoneInfo{Tokens: 1}))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, srv.Flush())
	var tokens []string
	for range 4 {
		_, err := c.Infer(context.Background(), client.Request{Capability: wire.CapGenerate, Body: []byte("hi")})
		require.NoError(t, err)
		r := <-replies
		tokens = append(tokens, r[strings.LastIndexByte(r, '.')+1:])
	}
	for i, tok := range tokens {
		assert.Regexp(t, `^[A-Za-z0-9_-]{22}$`, tok, "128 bits, base64url")
		for _, other := range tokens[:i] {
			assert.NotEqual(t, other[:12], tok[:12], "reply tokens %s and %s share a prefix (a nuid sequence)", other, tok)
		}
	}
}
