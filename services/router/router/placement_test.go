package router

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A request waiting for its ack holds no goroutine and no timer of its
// own: hundreds of them cost the router nothing but memory.
func TestIntegrationNoGoroutinePerRequest(t *testing.T) {
	const n = 300
	e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 60000; c.StopTimeout = 100 * time.Millisecond })
	e.addNode(tnode{id: "mute", region: "eu", maxConc: 1 << 20, health: healthy(10)})
	got := make(chan struct{}, n)
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("mute", "*"), func(*nats.Msg) { got <- struct{}{} }) // never acks
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.Flush())
	e.waitEligible("mute")
	before := runtime.NumGoroutine()
	for i := range n {
		m := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
		m.Reply = nats.NewInbox() // nobody reads it: raw publishes, no client goroutines
		m.Header.Set(wire.HdrRequestID, "req-"+strconv.Itoa(i))
		m.Header.Set(wire.HdrTimeoutMs, "60000")
		require.NoError(t, e.nc.PublishMsg(m))
	}
	for i := range n {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d dispatches arrived", i, n)
		}
	}
	natsembed.Eventually(t, 2*time.Second, func() error {
		return natsembed.Check(e.svc.acks.len() == n, "%d dispatches await their ack, want %d", e.svc.acks.len(), n)
	})
	assert.Less(t, runtime.NumGoroutine()-before, 20, "goroutines while %d requests await their ack", n)
	assert.Equal(t, n, e.svc.Stats().InFlight)
	assert.Equal(t, n, e.svc.sched.len(), "one timer each, on the one scheduler")
}

// A node may start a dispatch until its Fed-Ack-Deadline; its ack then
// still travels back. The router waits ackReturn for it instead of
// withdrawing (and blaming) a node that did its part.
func TestIntegrationAckJustAfterTheAckDeadline(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Policy.AckTimeoutMs = 150; c.Policy.MaxRetries = 0 })
	e.addNode(tnode{id: "late", region: "eu", health: healthy(10)})
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("late", "*"), func(m *nats.Msg) {
		ackBy, _ := strconv.ParseInt(m.Header.Get(wire.HdrAckDeadline), 10, 64)
		// took it just before the ack deadline; the ack leaves just after
		time.Sleep(time.Until(time.UnixMilli(ackBy).Add(ackReturn / 3)))
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted}}})
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: "late"}
		_ = e.nc.PublishMsg(rep.Done([]byte("made it"), wire.DoneInfo{Tokens: 1}))
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.Flush())
	e.waitEligible("late")
	resp, err := e.infer(client.Request{})
	require.NoError(t, err)
	assert.Equal(t, "late", resp.Node)
	// the client may have the node's answer before the router read the ack
	natsembed.Eventually(t, 2*time.Second, func() error {
		st := e.svc.Stats()
		return natsembed.Check(st.Placed == 1, "stats %+v", st)
	})
	st := e.svc.Stats()
	assert.Zero(t, st.AckCancels, "no targeted cancel")
	assert.Zero(t, st.Retries)
}

// Stop gives a request still being placed StopTimeout to finish, then cuts
// every kind of wait short: a request waiting for its ack, for a slot in the
// queue, or out its retry delay is answered 503 "shutting down". Stop is
// idempotent and no Start follows it.
func TestIntegrationStopCutsWaitsShort(t *testing.T) {
	const stopTimeout = 200 * time.Millisecond
	cases := []struct {
		name  string
		tune  func(*Config)
		node  func(e *env)
		ready func(e *env) error
	}{
		{"waiting for its ack", func(c *Config) { c.Policy.AckTimeoutMs = 5000 }, func(e *env) {
			sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("a", "*"), func(*nats.Msg) {}) // never acks
			require.NoError(e.t, err)
			e.t.Cleanup(func() { _ = sub.Unsubscribe() })
			require.NoError(e.t, e.nc.Flush())
		}, func(e *env) error {
			return natsembed.Check(e.svc.Stats().InFlight == 1, "in flight %d", e.svc.Stats().InFlight)
		}},
		{"waiting in the queue", func(c *Config) { c.Policy.MaxQueueMs = 60000 }, func(e *env) {
			a := e.slotNode("a", 1, time.Hour)
			go func() { _, _ = e.infer(client.Request{}) }() // takes the one slot
			natsembed.Eventually(e.t, 3*time.Second, func() error {
				n, _ := a.order()
				return natsembed.Check(len(n) == 1, "node a accepted %d requests", len(n))
			})
		}, func(e *env) error {
			return natsembed.Check(e.svc.Stats().QueueLen == 1, "queue holds %d", e.svc.Stats().QueueLen)
		}},
		{"waiting out a retry delay", func(c *Config) { c.Policy.RetryDelayMs = 60000; c.Policy.MaxRetries = 3 }, func(e *env) {
			e.fakeNode("a", func(int) string { return "nonsense" }) // a failure: retry after a minute
		}, func(e *env) error {
			return natsembed.Check(e.svc.Stats().Retries == 1, "retries %d", e.svc.Stats().Retries)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.StopTimeout = stopTimeout; tc.tune(c) })
			e.addNode(tnode{id: "a", region: "eu", maxConc: 1, health: healthy(10)})
			e.waitEligible("a")
			tc.node(e)
			answer := make(chan error, 1)
			go func() {
				_, err := e.infer(client.Request{})
				answer <- err
			}()
			natsembed.Eventually(t, 3*time.Second, func() error { return tc.ready(e) })
			begin := time.Now()
			require.NoError(t, e.svc.Stop())
			took := time.Since(begin)
			assert.GreaterOrEqual(t, took, stopTimeout, "Stop waits for the request being placed")
			// an attempt whose ack never came also waits out the finals grace
			assert.Less(t, took, stopTimeout+finalGrace+time.Second, "then cuts its wait short")
			select {
			case err := <-answer:
				require.Error(t, err)
				assert.Equal(t, wire.CodeNoCapacity, codeOf(t, err))
				assert.Contains(t, err.Error(), "shutting down")
			case <-time.After(3 * time.Second):
				t.Fatal("the cut request got no answer")
			}
			assert.Zero(t, e.svc.Stats().InFlight)
			assert.Zero(t, e.svc.sched.len(), "no timer left behind")
			require.NoError(t, e.svc.Stop(), "Stop is idempotent")
			assert.Error(t, e.svc.Start(context.Background()), "no Start after Stop")
		})
	}
}

// A capability many nodes serve is decided on the deciders, not on the
// subscription goroutines; every request is still placed once.
func TestIntegrationManyCandidatesDecidedOffSubscriptions(t *testing.T) {
	const nodes, requests = decideInlineMax + 44, 40
	e := newEnv(t, nil)
	for i := range nodes {
		e.addNode(tnode{id: "n" + strconv.Itoa(i), region: "eu", health: healthy(float64(10 + i%7))})
	}
	// every node at once: ack, answer, completion
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt("*", "*"), func(m *nats.Msg) {
		node := strings.Split(m.Subject, ".")[2]
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{wire.HdrStatus: {wire.StatusAccepted}}})
		rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: m.Header.Get(wire.HdrRequestID), Node: node}
		_ = e.nc.PublishMsg(rep.Done([]byte("from "+node), wire.DoneInfo{Tokens: 1}))
		_ = wire.PublishJSON(e.nc, subject.Default.Outcome(node), completedOf(node, m.Header.Get(wire.HdrRequestID)))
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.Flush())
	natsembed.Eventually(t, 10*time.Second, func() error {
		return natsembed.Check(e.svc.cache.candidateCount(wire.CapGenerate, "") == nodes && e.healthLoaded("n"+strconv.Itoa(nodes-1)),
			"router has %d of %d nodes", e.svc.cache.candidateCount(wire.CapGenerate, ""), nodes)
	})
	for i, err := range e.inferAll(requests, client.Request{}, 10*time.Second) {
		assert.NoError(t, err, "request %d", i)
	}
	// the clients may have their answers before the router read the acks
	natsembed.Eventually(t, 2*time.Second, func() error {
		st := e.svc.Stats()
		return natsembed.Check(st.Placed == requests && st.Outstanding == 0, "stats %+v", st)
	})
	assert.Positive(t, e.svc.stats.offloaded.Load(), "decisions over %d nodes went to the deciders", nodes)
}
