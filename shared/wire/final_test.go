package wire

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// The headers of a reply share one backing slice of values: a Set or Add
// on one of them afterwards (the node adds Fed-Content-Type, the router
// Fed-Attempts) must never change another.
func TestReplyHeadersIndependent(t *testing.T) {
	r := Reply{Inbox: "i", RequestID: "req", Node: "n1", Takeover: "n0"}
	cases := []struct {
		name string
		msg  func() *nats.Msg
	}{
		{"chunk", func() *nats.Msg { return r.Chunk([]byte("x")) }},
		{"done", func() *nats.Msg {
			return r.Done([]byte("x"), DoneInfo{Tokens: 2, LatencyMs: 1.5, TTFTMs: 0.5, RouteScore: "0.9"})
		}},
		{"fail", func() *nats.Msg { return r.Fail(CodeInternal, "boom") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.msg()
			before := map[string]string{}
			for k := range m.Header {
				before[k] = m.Header.Get(k)
			}
			m.Header.Add(HdrRequestID, "second")
			m.Header.Add(HdrNode, "other")
			m.Header.Set(HdrContentType, "audio/wav")
			for k, v := range before {
				if got := m.Header.Get(k); got != v {
					t.Errorf("%s changed from %q to %q", k, v, got)
				}
			}
			if got := m.Header.Values(HdrRequestID); len(got) != 2 || got[1] != "second" {
				t.Errorf("Add to %s: %q", HdrRequestID, got)
			}
		})
	}
}

func TestReplyAllocs(t *testing.T) {
	r := Reply{Inbox: "i", RequestID: "req", Node: "n1"}
	chunk := []byte("x")
	// one nats.Header.Set per header cost 5 for a chunk and 13 for a done
	if n := testing.AllocsPerRun(100, func() { _ = r.Chunk(chunk) }); n > 3 {
		t.Errorf("Chunk: %.0f allocations, want ≤ 3 (message, header map, values)", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = r.Done(chunk, DoneInfo{Tokens: 1, LatencyMs: 1.25, TTFTMs: 0.5}) }); n > 7 {
		t.Errorf("Done: %.0f allocations, want ≤ 7 (message, header map and its table, values, two numbers)", n)
	}
	// nine headers: a map sized for them at once, not a small one grown
	// into a table by the ninth (that was 11 allocations, 1 440 bytes)
	full := DoneInfo{Tokens: 1, LatencyMs: 1.25, TTFTMs: 0.5, RouteScore: "0.9", ContentType: "audio/wav"}
	if n := testing.AllocsPerRun(100, func() { _ = r.Done(chunk, full) }); n > 9 {
		t.Errorf("Done with 9 headers: %.0f allocations, want ≤ 9", n)
	}
}

// NextChunk gives each chunk of a stream the headers Chunk would, with
// Fed-Seq counting on, whether it starts the stream or reuses the last
// message; reusing allocates at most the Fed-Seq string.
func TestNextChunk(t *testing.T) {
	for _, start := range []int{0, 98, 1000} {
		fresh := Reply{Inbox: "i", RequestID: "req", Node: "n1", Takeover: "n0"}
		reused := fresh
		fresh.StartAt(start)
		reused.StartAt(start)
		var prev *nats.Msg
		for i := range 4 {
			data := []byte{byte('a' + i)}
			want := fresh.Chunk(data)
			prev = reused.NextChunk(prev, data)
			if prev.Subject != want.Subject || string(prev.Data) != string(want.Data) {
				t.Errorf("start %d, chunk %d: %s %q, want %s %q", start, i, prev.Subject, prev.Data, want.Subject, want.Data)
			}
			if len(prev.Header) != len(want.Header) {
				t.Errorf("start %d, chunk %d: headers %v, want %v", start, i, prev.Header, want.Header)
			}
			for k := range want.Header {
				if got := prev.Header.Get(k); got != want.Header.Get(k) {
					t.Errorf("start %d, chunk %d: %s %q, want %q", start, i, k, got, want.Header.Get(k))
				}
			}
		}
		if reused.Seq() != fresh.Seq() {
			t.Errorf("start %d: next Fed-Seq %d, want %d", start, reused.Seq(), fresh.Seq())
		}
	}
	r := Reply{Inbox: "i", RequestID: "req", Node: "n1"}
	r.StartAt(1000)
	chunk := []byte("x")
	m := r.NextChunk(nil, chunk)
	if n := testing.AllocsPerRun(100, func() { m = r.NextChunk(m, chunk) }); n > 1 {
		t.Errorf("NextChunk: %.0f allocations, want ≤ 1 (the Fed-Seq string)", n)
	}
}
