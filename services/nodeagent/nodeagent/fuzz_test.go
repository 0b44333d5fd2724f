package nodeagent

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// fakeRequest is a micro.Request for decode, which only reads.
type fakeRequest struct {
	micro.Request
	h    nats.Header
	data []byte
}

func (f *fakeRequest) Headers() micro.Headers { return micro.Headers(f.h) }
func (f *fakeRequest) Data() []byte           { return f.data }

// FuzzDecodeDispatch: dispatch headers come from routers but carry client
// values; decoding must never panic, and an accepted dispatch must name a
// model this node serves with that capability and a usable inbox.
func FuzzDecodeDispatch(f *testing.F) {
	f.Add("req-1", "_INBOX.abc", "generate", "m1", "1893456000000", "true", "internal")
	f.Add("", "", "", "", "", "", "")
	f.Add("r", "a b", "custom.x", "emb", "-5", "maybe", "secret")
	cfg := testConfig("n1", synthetic.New(synthetic.Config{}))
	s := &Service{cfg: cfg.withDefaults(), jobs: map[string][]*job{}, work: lifecycle.NewGroupWithCause(errDrained)}
	f.Fuzz(func(t *testing.T, id, inbox, capability, model, deadline, stream, privacy string) {
		h := nats.Header{}
		for k, v := range map[string]string{wire.HdrRequestID: id, wire.HdrReplyTo: inbox, wire.HdrCapability: capability,
			wire.HdrModel: model, wire.HdrDeadline: deadline, wire.HdrStream: stream, wire.HdrPrivacy: privacy} {
			if v != "" {
				h.Set(k, v)
			}
		}
		j, werr := s.decode(&fakeRequest{h: h, data: []byte("x")})
		if werr != nil {
			if werr.Code < 400 || werr.Code > 599 || werr.Description == "" {
				t.Fatalf("bad refusal: %+v", werr)
			}
			return
		}
		defer j.cancel(nil)
		if j.reply.Inbox == "" || j.call.RequestID == "" {
			t.Fatal("accepted without inbox or request id")
		}
		ok := false
		for _, m := range s.cfg.Models {
			if m.ModelID == j.call.Model && m.Serves(j.call.Capability) {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("accepted model %q capability %q the node does not serve", j.call.Model, j.call.Capability)
		}
		if _, has := j.ctx.Deadline(); !has {
			t.Fatal("accepted request without a deadline")
		}
	})
}
