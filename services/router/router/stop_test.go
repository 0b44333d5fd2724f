package router

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// fakeRequest is a micro request as a handler sees it; the methods a
// handler must not use here are left nil.
type fakeRequest struct {
	micro.Request
	msg *nats.Msg
}

func (r fakeRequest) Subject() string        { return r.msg.Subject }
func (r fakeRequest) Reply() string          { return r.msg.Reply }
func (r fakeRequest) Data() []byte           { return r.msg.Data }
func (r fakeRequest) Headers() micro.Headers { return micro.Headers(r.msg.Header) }

// TestIntegrationRefusedAfterStop: micro may still run a handler after its
// Stop returned; such a request is not placed but still answered.
func TestIntegrationRefusedAfterStop(t *testing.T) {
	e := newEnv(t, nil)
	require.NoError(t, e.svc.Stop())
	for _, c := range []struct {
		name   string
		handle func(micro.Request)
		subj   string
		want   string
	}{
		{"infer", e.svc.handleInfer, subject.Default.Infer(wire.CapGenerate), "router stopping: request not placed"},
		{"candidates", e.svc.handleCandidates, subject.Default.RouterCandidates(), "router stopping"},
	} {
		t.Run(c.name, func(t *testing.T) {
			inbox := nats.NewInbox()
			sub, err := e.nc.SubscribeSync(inbox)
			require.NoError(t, err)
			defer sub.Unsubscribe()
			require.NoError(t, e.nc.Flush()) // the answer comes from the router's own connection
			c.handle(fakeRequest{msg: &nats.Msg{Subject: c.subj, Reply: inbox, Header: nats.Header{}}})
			m, err := sub.NextMsg(2 * time.Second)
			require.NoError(t, err)
			we := wire.ErrorFromHeader(m.Header)
			require.NotNil(t, we)
			assert.Equal(t, wire.CodeNoCapacity, we.Code)
			assert.Contains(t, we.Description, c.want)
		})
	}
	assert.Zero(t, e.svc.Stats().InFlight, "a refused request gives its slot back")
}
