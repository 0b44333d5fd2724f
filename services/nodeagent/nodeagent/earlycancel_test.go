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
	assert.False(t, e.take("a"), "nothing remembered")
	e.remember("a", now)
	assert.True(t, e.take("a"))
	assert.False(t, e.take("a"), "taken once")

	e.remember("old", now.Add(-2*earlyCancelTTL))
	assert.False(t, e.take("old"), "expired")

	for i := range earlyCancelMax {
		e.remember(fmt.Sprint(i), now)
	}
	e.remember("overflow", now)
	assert.LessOrEqual(t, len(e.at), earlyCancelMax, "bounded")
	assert.False(t, e.take("overflow"), "dropped when full of fresh entries")
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
