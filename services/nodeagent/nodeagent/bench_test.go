package nodeagent

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// benchDispatch measures one dispatch round: accept, backend, all messages
// to the client inbox, as a router and client see it.
// atOnce dispatches as a router does (Fed-Ack-Done, Fed-Ack-Deadline): a
// whole answer from the synthetic backend is then answered where it
// arrives, and acked done after its final.
func benchDispatch(b *testing.B, tokens int, stream, atOnce bool) {
	s := natsembed.StartForTest(b)
	nc := natsembed.ConnectForTest(b, s)
	startCatalogTB(b, nc)
	cfg := testConfig("bench", synthetic.New(synthetic.Config{Tokens: tokens, TokenBytes: 16}))
	cfg.MaxConcurrency = 1024
	agentNC := natsembed.ConnectForTest(b, s)
	// Warnings only: a debug line per request would be what the benchmark measures.
	svc, err := New(agentNC, cfg, natsembed.Logger(b).Level(zerolog.WarnLevel))
	if err != nil {
		b.Fatal(err)
	}
	natsembed.RunForTest(b, svc)
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		m := nats.NewMsg(subject.Default.NodeInferAt("bench", "internal"))
		m.Data = []byte("bench input")
		m.Header.Set(wire.HdrRequestID, "b-"+strconv.Itoa(i))
		m.Header.Set(wire.HdrReplyTo, inbox)
		m.Header.Set(wire.HdrCapability, wire.CapGenerate)
		if stream {
			m.Header.Set(wire.HdrStream, "true")
		}
		want := wire.StatusAccepted
		if atOnce {
			want = wire.StatusDone
			m.Header.Set(wire.HdrAckDone, "true")
			m.Header.Set(wire.HdrAckDeadline, strconv.FormatInt(time.Now().Add(2*time.Second).UnixMilli(), 10))
		}
		ack, err := nc.RequestMsg(m, 2*time.Second)
		if err != nil || ack.Header.Get(wire.HdrStatus) != want {
			b.Fatalf("dispatch: %v, ack %v, want %s", err, ack, want)
		}
		for {
			msg, err := sub.NextMsg(2 * time.Second)
			if err != nil {
				b.Fatal(err)
			}
			if wire.IsFinal(msg) {
				break
			}
		}
	}
}

func BenchmarkDispatchWhole(b *testing.B)       { benchDispatch(b, 1, false, false) }
func BenchmarkDispatchWholeAtOnce(b *testing.B) { benchDispatch(b, 1, false, true) }
func BenchmarkDispatchStream256(b *testing.B)   { benchDispatch(b, 256, true, false) }
