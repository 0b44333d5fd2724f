package client_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A request that hears nothing for SilentAfter asks fed.held.<id>
// (DESIGN §3.8): when nobody answers it is sent again, same id, reply and
// cancel key; when someone holds it, it waits. Here one responder plays
// router and node: it swallows the first `swallow` copies of each request
// (a router killed with it in hand), answers held while `holding`, and
// answers after `answerAfter`; a stream that is not held sends its first
// chunk at once then (heard from, then quiet: it must not be sent again).
func TestSilentRequestAskedAndSentAgain(t *testing.T) {
	for _, tc := range []struct {
		name        string
		stream      bool
		swallow     int           // copies dropped, as a dead router would
		holding     bool          // answers fed.held while it holds a request
		answerAfter time.Duration // a held request is answered this late
		timeout     time.Duration
		wantResent  int64
		wantErr     int // 0: answered
	}{
		{name: "whole, lost once", swallow: 1, timeout: 10 * time.Second, wantResent: 1},
		{name: "stream, lost once", stream: true, swallow: 1, timeout: 10 * time.Second, wantResent: 1},
		{name: "held and slow: not sent again", holding: true, answerAfter: 3 * time.Second, timeout: 10 * time.Second},
		{name: "a stream heard from, then quiet: not asked, not sent again", stream: true, answerAfter: 3 * time.Second, timeout: 10 * time.Second},
		{name: "lost every time: MaxResends, then the deadline", swallow: 1 << 20, timeout: 6 * time.Second, wantResent: client.MaxResends, wantErr: wire.CodeTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, c := setup(t)
			var mu sync.Mutex
			copies := map[string]int{} // request id → copies received
			held := map[string]bool{}
			var cancelKeys []string
			serve(t, srv, "generate", func(m *nats.Msg) {
				id := m.Header.Get(wire.HdrRequestID)
				mu.Lock()
				copies[id]++
				n := copies[id]
				cancelKeys = append(cancelKeys, m.Header.Get(wire.HdrCancelKey))
				if n <= tc.swallow {
					mu.Unlock()
					return
				}
				held[id] = tc.holding
				mu.Unlock()
				r := wire.Reply{Inbox: m.Reply, RequestID: id, Node: "n1"}
				early := tc.stream && tc.answerAfter > 0 && !tc.holding
				if early { // heard from at once, then quiet
					_ = srv.PublishMsg(r.Chunk([]byte("a")))
				}
				time.AfterFunc(tc.answerAfter, func() {
					switch {
					case early:
						_ = srv.PublishMsg(r.Done(nil, wire.DoneInfo{Tokens: 1}))
					case tc.stream:
						_ = srv.PublishMsg(r.Chunk([]byte("a")))
						_ = srv.PublishMsg(r.Done(nil, wire.DoneInfo{Tokens: 1}))
					default:
						_ = srv.PublishMsg(r.Done([]byte("a"), wire.DoneInfo{Tokens: 1}))
					}
				})
			})
			sub, err := srv.Subscribe(subject.Default.HeldAll(), func(m *nats.Msg) {
				mu.Lock()
				h := held[subject.LastToken(m.Subject)]
				mu.Unlock()
				if h {
					b, _ := json.Marshal(api.StatusResponse{Held: true})
					_ = m.Respond(b)
				}
			})
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			require.NoError(t, srv.Flush())

			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			req := client.Request{Capability: "generate", Body: []byte("hi")}
			var body string
			if tc.stream {
				st, err := c.InferStream(ctx, req)
				require.NoError(t, err)
				defer st.Close()
				var streamErr error
				for chunk, err := range st.Chunks() {
					if err != nil {
						streamErr = err
						break
					}
					body += string(chunk.Data)
				}
				checkErr(t, streamErr, tc.wantErr)
			} else {
				resp, err := c.Infer(ctx, req)
				checkErr(t, err, tc.wantErr)
				if err == nil {
					body = string(resp.Body)
				}
			}
			if tc.wantErr == 0 {
				assert.Equal(t, "a", body)
			}
			assert.Equal(t, tc.wantResent, c.Resent(), "requests sent again")
			mu.Lock()
			defer mu.Unlock()
			for id, n := range copies {
				assert.Equal(t, int(tc.wantResent)+1, n, "copies of %s the routers got", id)
			}
			for _, k := range cancelKeys {
				assert.Equal(t, cancelKeys[0], k, "every copy carries the request's cancel key")
			}
		})
	}
}

func checkErr(t *testing.T, err error, code int) {
	t.Helper()
	if code == 0 {
		require.NoError(t, err)
		return
	}
	var werr *wire.Error
	require.ErrorAs(t, err, &werr)
	assert.Equal(t, code, werr.Code, "error %v", err)
}
