package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// askHeld asks fed.held.<id> as a client would and reports whether anyone
// answered held within 300 ms.
func (e *env) askHeld(id string) bool {
	m, err := e.nc.Request(subject.Default.Held(id), nil, 300*time.Millisecond)
	if err != nil {
		require.ErrorIs(e.t, err, nats.ErrTimeout, "held question of %s", id)
		return false
	}
	assert.JSONEq(e.t, `{"held":true}`, string(m.Data))
	return true
}

// A request slower to start than SilentAfter is held (DESIGN §3.8): the
// router, then the node, answer fed.held while they have it, nobody once
// it is answered, and the client does not send it again.
func TestSlowRequestHeldNotSentAgain(t *testing.T) {
	e := start(t, node("slow-start", "us-west", wire.PrivacyInternal, synthetic.Config{TTFT: client.SilentAfter + time.Second}))
	for _, stream := range []bool{false, true} {
		id := "held-" + map[bool]string{false: "whole", true: "stream"}[stream]
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := client.Request{Capability: wire.CapGenerate, Body: []byte("hi"), RequestID: id}
			if !stream {
				_, err := e.c.Infer(ctx, r)
				done <- err
				return
			}
			st, err := e.c.InferStream(ctx, r)
			if err == nil {
				defer st.Close()
				for _, err = range st.Chunks() {
					if err != nil {
						break
					}
				}
			}
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		assert.True(t, e.askHeld(id), "%s held while the node prepares its first token", id)
		require.NoError(t, <-done, id)
		// the router lets go when the node's completion outcome arrives,
		// a little after the client has the final
		assert.Eventually(t, func() bool { return !e.askHeld(id) }, 3*time.Second, 50*time.Millisecond,
			"%s held by nobody once answered", id)
	}
	assert.Zero(t, e.c.Resent(), "a held request is not sent again")
}

// A router that dies with a request in hand (here a member of the
// routers' queue group that takes one request and leaves) leaves nobody
// to answer fed.held: the client sends the request again after
// SilentAfter and gets its one answer.
func TestRequestLostInRouterSentAgain(t *testing.T) {
	e := start(t, node("n1", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	var mu sync.Mutex
	swallowed := ""
	var dead *nats.Subscription
	mu.Lock()
	dead, err := e.nc.QueueSubscribe(subject.Default.InferAll(), subject.QueueRouter, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		swallowed = m.Header.Get(wire.HdrRequestID)
		_ = dead.Unsubscribe() // dead from now on: it never answers
	})
	mu.Unlock()
	require.NoError(t, err)
	require.NoError(t, e.nc.Flush())

	got := func() string { mu.Lock(); defer mu.Unlock(); return swallowed }
	for i := 0; i < 40 && got() == ""; i++ { // the queue group picks at random
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		resp, err := e.c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hi")})
		cancel()
		require.NoError(t, err, "request %d", i)
		assert.Equal(t, "n1", resp.Node)
		if got() == resp.RequestID {
			assert.GreaterOrEqual(t, time.Since(start), client.SilentAfter, "answered once sent again")
		}
	}
	require.NotEmpty(t, got(), "the dead router got a request")
	assert.Equal(t, int64(1), e.c.Resent(), "the lost request was sent again, the others not")
}
