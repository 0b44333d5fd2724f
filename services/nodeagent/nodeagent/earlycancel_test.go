package nodeagent

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestEarlyCancels(t *testing.T) {
	now := time.Now()
	var e earlyCancels
	assert.False(t, e.take("a", ""), "nothing remembered")
	e.remember("a", "", now)
	assert.True(t, e.take("a", ""))
	assert.False(t, e.take("a", ""), "taken once")

	e.remember("k", "secret", now)
	assert.False(t, e.take("k", "other"), "another key does not cancel")
	e.remember("k", "secret", now)
	assert.True(t, e.take("k", "secret"))

	e.remember("old", "", now.Add(-2*earlyCancelTTL))
	assert.False(t, e.take("old", ""), "expired")

	for i := range earlyCancelMax {
		e.remember(fmt.Sprint(i), "", now)
	}
	e.remember("overflow", "", now)
	assert.LessOrEqual(t, len(e.at), earlyCancelMax, "bounded")
	assert.False(t, e.take("overflow", ""), "dropped when full of fresh entries")
}

// A cancel that reaches the node before the dispatch (the client gave up
// while a router was still retrying) still ends the request at once with 499.
func TestCancelBeforeDispatch(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))
	const id = "early-cancel-1"
	require.NoError(t, r.nc.Publish(subject.Default.Cancel(id), nil))
	require.NoError(t, r.nc.Flush())
	// The cancel subscription is on the agent's own connection: wait until
	// it has seen the cancel before dispatching.
	time.Sleep(50 * time.Millisecond)
	c := r.dispatch("n1", "x", stream, func(h nats.Header) { h.Set(wire.HdrRequestID, id) })
	c.id = id
	require.Equal(t, wire.StatusAccepted, c.status)
	a := c.read(t, 2*time.Second)
	assert.Equal(t, wire.CodeCanceled, codeOf(a.final), "ended as canceled, not run for nobody")
}

// A cancel takes effect only with the request's Fed-Cancel-Key: someone who
// saw only the request id cannot stop it (nor withdraw it, naming the node).
func TestCancelNeedsTheKey(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))
	const id, key = "keyed-1", "s3cret-key"
	c := r.dispatch("n1", "x", stream, func(h nats.Header) { h.Set(wire.HdrRequestID, id); h.Set(wire.HdrCancelKey, key) })
	c.id = id
	require.Equal(t, wire.StatusAccepted, c.status)
	<-g.started
	for _, h := range []nats.Header{{}, {wire.HdrCancelKey: {"guess"}}, {wire.HdrNode: {"n1"}}, {wire.HdrNode: {"n1"}, wire.HdrCancelKey: {"guess"}}} {
		require.NoError(t, r.nc.PublishMsg(&nats.Msg{Subject: subject.Default.Cancel(id), Header: h}))
	}
	require.NoError(t, r.nc.Flush())
	select {
	case <-g.canceled:
		t.Fatal("a cancel without the key stopped the request")
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, r.nc.PublishMsg(&nats.Msg{Subject: subject.Default.Cancel(id), Header: nats.Header{wire.HdrCancelKey: {key}}}))
	a := c.read(t, 2*time.Second)
	assert.Equal(t, wire.CodeCanceled, codeOf(a.final), "the key holder's cancel works")
}

// A withdrawal carries the key's digest for the node it names
// (wire.WithdrawKey), never the key: every node hears fed.cancel.*, and
// what one node's withdrawal shows (the digest for it) neither withdraws
// the attempt on another node nor cancels the request.
func TestWithdrawNeedsTheNodesDigest(t *testing.T) {
	r := newRig(t)
	outcomes := subscribeOutcomes(t, r.nc, "n1")
	g := newGate()
	r.agent(testConfig("n1", g))
	const id, key = "keyed-2", "s3cret-key-2"
	c := r.dispatch("n1", "x", stream, func(h nats.Header) { h.Set(wire.HdrRequestID, id); h.Set(wire.HdrCancelKey, key) })
	c.id = id
	require.Equal(t, wire.StatusAccepted, c.status)
	<-g.started
	seen := wire.WithdrawKey(key, "n2") // what a withdrawal of n2's attempt showed every node
	for _, h := range []nats.Header{
		{wire.HdrCancelKey: {seen}},
		{wire.HdrNode: {"n1"}, wire.HdrCancelKey: {seen}},
		{wire.HdrCancelKey: {wire.WithdrawKey(key, "n1")}}, // the digest cancels nothing untargeted
	} {
		require.NoError(t, r.nc.PublishMsg(&nats.Msg{Subject: subject.Default.Cancel(id), Header: h}))
	}
	require.NoError(t, r.nc.Flush())
	select {
	case <-g.canceled:
		t.Fatal("another node's withdrawal key stopped the request")
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, r.nc.PublishMsg(&nats.Msg{Subject: subject.Default.Cancel(id),
		Header: nats.Header{wire.HdrNode: {"n1"}, wire.HdrCancelKey: {wire.WithdrawKey(key, "n1")}}}))
	select {
	case <-g.canceled:
	case <-time.After(2 * time.Second):
		t.Fatal("the withdrawal for n1 did not reach the backend")
	}
	select {
	case o := <-outcomes:
		assert.Equal(t, wire.CodeCanceled, o.Code)
		assert.True(t, o.Silent, "withdrawn: no final to the client")
	case <-time.After(2 * time.Second):
		t.Fatal("no outcome for the withdrawn attempt")
	}
	for {
		m, err := c.sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			break // silence after the chunk: no final
		}
		assert.False(t, wire.IsFinal(m), "a withdrawn attempt sends the client no final")
	}
}
