package router

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// BenchmarkHandleInfer is the work the infer subscription does per request
// with nothing in the way: parse, admit, decide, build and publish the
// dispatch, park the placement for its ack. No node answers (the acks stay
// pending: ack_timeout_ms is a minute), so this is the router's own cost.
func BenchmarkHandleInfer(b *testing.B) {
	srv := natsembed.StartForTest(b)
	nc := natsembed.ConnectForTest(b, srv)
	kv := natsembed.BucketsForTest(b, nc)
	cfg := DefaultConfig()
	cfg.Policy.AckTimeoutMs, cfg.MaxInFlight, cfg.StopTimeout = 60000, 1<<30, 10*time.Millisecond
	svc, err := New(natsembed.ConnectForTest(b, srv), cfg, zerolog.Nop()) // production logs no debug lines
	if err != nil {
		b.Fatal(err)
	}
	natsembed.RunForTest(b, svc)
	n := tnode{id: "a", region: "eu", maxConc: 1 << 24, health: healthy(10)}
	n.health.NodeID = n.id
	for _, x := range []struct {
		kv jetstream.KeyValue
		v  any
	}{{kv.Catalog, n.catalogRecord()}, {kv.Health, n.health}} {
		data, _ := json.Marshal(x.v)
		if _, err := x.kv.Put(context.Background(), buckets.NodeKey(n.id), data); err != nil {
			b.Fatal(err)
		}
	}
	// a node that takes every dispatch and never acks
	sub, err := nc.Subscribe(subject.Default.NodeInferAt(n.id, "*"), func(*nats.Msg) {})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	natsembed.Eventually(b, 0, func() error {
		svc.cache.mu.RLock()
		defer svc.cache.mu.RUnlock()
		en := svc.cache.entries[n.id]
		return natsembed.Check(en != nil && en.hasHealth && en.node != nil, "the node never reached the router")
	})
	inbox := nats.NewInbox()
	subj := subject.Default.Infer(wire.CapGenerate)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h := nats.Header{wire.HdrTimeoutMs: {"60000"}, wire.HdrRequestID: {"req-" + strconv.Itoa(i)}}
		svc.handleInfer(fakeRequest{msg: &nats.Msg{Subject: subj, Reply: inbox, Header: h, Data: []byte("ping")}})
	}
	b.StopTimer()
	if got := svc.acks.len(); got < b.N {
		b.Fatalf("%d dispatches await their ack, want %d (stats %+v)", got, b.N, svc.Stats())
	}
}
