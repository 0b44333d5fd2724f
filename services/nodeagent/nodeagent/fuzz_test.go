package nodeagent

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/api"
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

// FuzzAckDeadline: Fed-Ack-Deadline comes from routers, but any client can
// publish on a node's subject. Never a panic; a refusal is a 400 naming the
// header; an accepted value is positive Unix ms, late exactly when it is not
// after now.
func FuzzAckDeadline(f *testing.F) {
	f.Add("1893456000000", int64(1_800_000_000_000))
	f.Add("1800000000000", int64(1_800_000_000_000))
	f.Add("", int64(0))
	f.Add("9223372036854775807", int64(-1))
	f.Add("-1", int64(5))
	f.Add("1e3", int64(5))
	f.Fuzz(func(t *testing.T, v string, nowMs int64) {
		h := nats.Header{}
		if v != "" {
			h.Set(wire.HdrAckDeadline, v)
		}
		late, werr := ackDeadlinePassed(h, time.UnixMilli(nowMs))
		if werr != nil {
			if werr.Code != wire.CodeBadRequest || !strings.Contains(werr.Description, wire.HdrAckDeadline) || late {
				t.Fatalf("bad refusal of %q: %+v late=%v", v, werr, late)
			}
			return
		}
		if v == "" {
			if late {
				t.Fatal("a dispatch without the header is never late")
			}
			return
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("accepted %q", v)
		}
		if late != (time.UnixMilli(nowMs).UnixMilli() >= n) {
			t.Fatalf("late=%v for %q at %d", late, v, nowMs)
		}
	})
}

// FuzzDecodeReplayRequest: any client can publish on a node's replay
// subject. Never a panic; a refusal is a 400 with a description; an
// accepted request has an id of 1–MaxRequestIDLen bytes and 0 ≤ from_seq ≤
// to_seq, and is what encoding/json reads from the same body.
func FuzzDecodeReplayRequest(f *testing.F) {
	f.Add([]byte(`{"request_id":"req-1","from_seq":3,"to_seq":5}`))
	f.Add([]byte(`{"request_id":"req-1","from_seq":0,"to_seq":1e308}`))
	f.Add([]byte(`{"request_id":"","from_seq":-1,"to_seq":-2}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		rr, werr := decodeReplayRequest(body)
		if werr != nil {
			if werr.Code != wire.CodeBadRequest || werr.Description == "" || len(werr.RequestID) > wire.MaxRequestIDLen {
				t.Fatalf("bad refusal of %q: %+v", body, werr)
			}
			return
		}
		if rr.RequestID == "" || len(rr.RequestID) > wire.MaxRequestIDLen || rr.FromSeq < 0 || rr.ToSeq < rr.FromSeq {
			t.Fatalf("accepted %q as %+v", body, rr)
		}
		var again api.ReplayRequest
		if err := json.Unmarshal(body, &again); err != nil || again != rr {
			t.Fatalf("accepted %q as %+v, encoding/json reads %+v (%v)", body, rr, again, err)
		}
	})
}

// FuzzDecodeStatusRequest: any client can publish on a node's status
// subject. Never a panic; a refusal is a 400 with a description; an
// accepted request has an id of 1–MaxRequestIDLen bytes and is what
// encoding/json reads from the same body.
func FuzzDecodeStatusRequest(f *testing.F) {
	f.Add([]byte(`{"request_id":"req-1"}`))
	f.Add([]byte(`{"request_id":""}`))
	f.Add([]byte(`{"request_id":"a","x":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		sr, werr := decodeStatusRequest(body)
		if werr != nil {
			if werr.Code != wire.CodeBadRequest || werr.Description == "" || len(werr.RequestID) > wire.MaxRequestIDLen {
				t.Fatalf("bad refusal of %q: %+v", body, werr)
			}
			return
		}
		if sr.RequestID == "" || len(sr.RequestID) > wire.MaxRequestIDLen || len(body) > maxStatusBody {
			t.Fatalf("accepted %q as %+v", body, sr)
		}
		var again api.StatusRequest
		if err := json.Unmarshal(body, &again); err != nil || again != sr {
			t.Fatalf("accepted %q as %+v, encoding/json reads %+v (%v)", body, sr, again, err)
		}
	})
}
