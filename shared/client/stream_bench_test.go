package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// BenchmarkStreamRead reads 4096-chunk streams from one streamer, side by
// side: raw counts chunks in a subscription callback; sdk reads them with
// Stream.Chunks, as a caller does. Per op is one chunk, so ns/op and
// allocs/op compare the SDK's per-chunk cost with raw NATS's.
func BenchmarkStreamRead(b *testing.B) {
	const chunks = 4096
	data := []byte("abcdefghijklmnop")
	nc, c := benchResponder(b, func(srv *nats.Conn, m *nats.Msg) {
		go func() {
			r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
			var cm *nats.Msg
			for range chunks {
				cm = r.NextChunk(cm, data)
				_ = srv.PublishMsg(cm)
			}
			_ = srv.PublishMsg(r.Done(nil, wire.DoneInfo{Tokens: chunks}))
		}()
	})
	streams := func(b *testing.B) int { return (b.N + chunks - 1) / chunks }

	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for range streams(b) {
			inbox := nats.NewInbox()
			done := make(chan int, 1)
			n := 0
			sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
				if len(m.Data) == 0 {
					done <- n
					return
				}
				n++
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := nc.PublishMsg(&nats.Msg{Subject: "bench.raw", Reply: inbox, Header: nats.Header{wire.HdrRequestID: {"raw"}}}); err != nil {
				b.Fatal(err)
			}
			select {
			case got := <-done:
				if got != chunks {
					b.Fatalf("raw: %d chunks, want %d", got, chunks)
				}
			case <-time.After(10 * time.Second):
				b.Fatal("raw: timeout")
			}
			_ = sub.Unsubscribe()
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for range streams(b) {
			st, err := c.InferStream(ctx, client.Request{Capability: "generate", Body: []byte("x")})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, err := range st.Chunks() {
				if err != nil {
					b.Fatal(err)
				}
				n++
			}
			st.Close()
			if n != chunks {
				b.Fatalf("sdk: %d chunks, want %d", n, chunks)
			}
		}
	})
}

// BenchmarkInferWhole is one whole answer per op from an echo responder,
// side by side: raw is nats.go's Request with the reply headers a node
// sends; sdk is Client.Infer. The difference is what the SDK adds to a
// request's round trip (its headers, secrets, call bookkeeping, timer).
func BenchmarkInferWhole(b *testing.B) {
	nc, c := benchResponder(b, func(srv *nats.Conn, m *nats.Msg) {
		r := wire.Reply{Inbox: m.Reply, RequestID: m.Header.Get(wire.HdrRequestID), Node: "n1"}
		_ = srv.PublishMsg(r.Done(m.Data, wire.DoneInfo{Tokens: 1}))
	})
	body := []byte("ping")
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := nc.Request("bench.raw", body, 5*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		req := client.Request{Capability: "generate", Model: "echo", Body: body}
		for range b.N {
			if _, err := c.Infer(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchResponder starts a server whose responder answers both the raw
// subject (bench.raw) and fed.infer.generate with answer, and returns the
// raw side's connection and an SDK Client, each a connection of its own.
func benchResponder(b *testing.B, answer func(srv *nats.Conn, m *nats.Msg)) (*nats.Conn, *client.Client) {
	s := natsembed.StartForTest(b)
	srv := natsembed.ConnectForTest(b, s)
	c, err := client.New(natsembed.ConnectForTest(b, s))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	for _, subj := range []string{"bench.raw", subject.Default.Infer("generate")} {
		if _, err := srv.Subscribe(subj, func(m *nats.Msg) { answer(srv, m) }); err != nil {
			b.Fatal(err)
		}
	}
	if err := srv.Flush(); err != nil {
		b.Fatal(err)
	}
	return natsembed.ConnectForTest(b, s), c
}
