package nodeagent

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// askReplay sends a replay request to node and returns the answer (an
// api.ReplayResponse, or a micro error).
func (r *rig) askReplay(node string, body []byte) *nats.Msg {
	r.t.Helper()
	m, err := r.nc.Request(subject.Default.NodeReplay(node), body, 2*time.Second)
	require.NoError(r.t, err, "replay on node %s: no answer", node)
	return m
}

func replayBody(t *testing.T, id string, from, to int) []byte {
	t.Helper()
	b, err := json.Marshal(api.ReplayRequest{RequestID: id, FromSeq: from, ToSeq: to})
	require.NoError(t, err)
	return b
}

// replayed asks for from…to of c's stream and checks the answer and the
// messages sent again to c's inbox: each is want[seq] exactly (headers and
// payload) plus Fed-Replay: true.
func (r *rig) replayed(c *call, node string, from, to int, want []*nats.Msg) {
	t := r.t
	t.Helper()
	ans := r.askReplay(node, replayBody(t, c.id, from, to))
	require.Zero(t, codeOf(ans), "replay %d-%d of %s: %s", from, to, c.id, ans.Header.Get(wire.HdrServiceError))
	var rr api.ReplayResponse
	require.NoError(t, json.Unmarshal(ans.Data, &rr))
	assert.Equal(t, to-from+1, rr.Sent)
	for seq := from; seq <= to; seq++ {
		m, err := c.sub.NextMsg(2 * time.Second)
		require.NoError(t, err, "replayed Fed-Seq %d of %s not received", seq, c.id)
		assert.Equal(t, "true", m.Header.Get(wire.HdrReplay), "Fed-Replay on Fed-Seq %d", seq)
		h := nats.Header{}
		for k, v := range m.Header {
			if k != wire.HdrReplay {
				h[k] = v
			}
		}
		assert.Equal(t, want[seq].Header, h, "headers of replayed Fed-Seq %d as first sent", seq)
		assert.Equal(t, string(want[seq].Data), string(m.Data), "payload of replayed Fed-Seq %d", seq)
	}
	_, err := c.sub.NextMsg(50 * time.Millisecond)
	assert.ErrorIs(t, err, nats.ErrTimeout, "nothing beyond the asked-for range")
}

// messages is the answer as the client got it: chunks, then the final.
func (a answer) messages() []*nats.Msg { return append(append([]*nats.Msg(nil), a.chunks...), a.final) }

// A stream's messages are sent again exactly as first sent (every header,
// Fed-Takeover included, and the payload) plus Fed-Replay, both while it
// runs and after its final; the final itself can be replayed.
func TestReplaySendsAgainExactly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		takeover string
	}{{"plain", ""}, {"takeover", "lost-1"}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 8})))
			opts := []dispatchOpt{stream}
			if tc.takeover != "" {
				opts = append(opts, func(h nats.Header) { h.Set(wire.HdrTakeover, tc.takeover) })
			}
			c := r.dispatch("n1", "tell me", opts...)
			require.Equal(t, wire.StatusAccepted, c.status)
			a := c.read(t, 2*time.Second)
			require.Len(t, a.chunks, 8)
			require.Equal(t, "8", a.final.Header.Get(wire.HdrSeq))
			assert.Equal(t, tc.takeover, a.final.Header.Get(wire.HdrTakeover))
			msgs := a.messages()

			r.replayed(c, "n1", 3, 5, msgs) // chunks 3..5, after the final
			r.replayed(c, "n1", 6, 8, msgs) // up to and with the final
			r.replayed(c, "n1", 0, 0, msgs)
		})
	}
}

// A stream still running is replayable up to what it has sent.
func TestReplayWhileStreaming(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	first, err := c.sub.NextMsg(2 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "0", first.Header.Get(wire.HdrSeq))

	r.replayed(c, "n1", 0, 0, []*nats.Msg{first})
	ans := r.askReplay("n1", replayBody(t, c.id, 0, 1))
	assert.Equal(t, wire.CodeNotFound, codeOf(ans), "Fed-Seq 1 is not sent yet")

	close(g.release)
	for _, seq := range []string{"1", "2"} { // the rest: chunk 1 and the final
		m, err := c.sub.NextMsg(2 * time.Second)
		require.NoError(t, err)
		require.Equal(t, seq, m.Header.Get(wire.HdrSeq))
		assert.Empty(t, m.Header.Get(wire.HdrReplay))
	}
}

// The buffer's bounds: what is past them is a 404, what is within is
// replayed.
func TestReplayEviction(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     func(*Config)
		streams int // streams run one after the other
		// gone and held are ranges of the first stream (index 0) or the
		// last one (index streams-1), after all have finished.
		goneStream, goneFrom, goneTo int
		heldStream, heldFrom, heldTo int
		wait                         bool // gone only after ReplayKeep: Eventually
	}{
		{name: "chunks", cfg: func(c *Config) { c.ReplayChunks = 4 }, streams: 1,
			goneFrom: 0, goneTo: 5, heldFrom: 5, heldTo: 8},
		{name: "bytes", cfg: func(c *Config) { c.ReplayBytes = 300 }, streams: 1,
			goneFrom: 0, goneTo: 0, heldFrom: 8, heldTo: 8},
		{name: "streams", cfg: func(c *Config) { c.ReplayStreams = 1 }, streams: 2,
			goneStream: 0, goneFrom: 0, goneTo: 0, heldStream: 1, heldFrom: 0, heldTo: 8},
		{name: "keep", cfg: func(c *Config) { c.ReplayKeep = 150 * time.Millisecond }, streams: 1,
			goneFrom: 0, goneTo: 0, heldFrom: 0, heldTo: 8, wait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			cfg := testConfig("n1", synthetic.New(synthetic.Config{Tokens: 8}))
			tc.cfg(&cfg)
			r.agent(cfg)
			var calls []*call
			var msgs [][]*nats.Msg
			for i := 0; i < tc.streams; i++ {
				c := r.dispatch("n1", "story "+strconv.Itoa(i), stream)
				require.Equal(t, wire.StatusAccepted, c.status)
				msgs = append(msgs, c.read(t, 2*time.Second).messages())
				calls = append(calls, c)
			}
			if tc.wait {
				// Within ReplayKeep it is held, then it is gone.
				r.replayed(calls[tc.heldStream], "n1", tc.heldFrom, tc.heldTo, msgs[tc.heldStream])
				natsembed.Eventually(t, 3*time.Second, func() error {
					ans := r.askReplay("n1", replayBody(t, calls[tc.goneStream].id, tc.goneFrom, tc.goneTo))
					if codeOf(ans) != wire.CodeNotFound {
						return fmt.Errorf("stream still held after ReplayKeep (code %d)", codeOf(ans))
					}
					return nil
				})
				return
			}
			ans := r.askReplay("n1", replayBody(t, calls[tc.goneStream].id, tc.goneFrom, tc.goneTo))
			require.Equal(t, wire.CodeNotFound, codeOf(ans), "Fed-Seq %d-%d evicted", tc.goneFrom, tc.goneTo)
			assert.Contains(t, ans.Header.Get(wire.HdrServiceError), calls[tc.goneStream].id)
			r.replayed(calls[tc.heldStream], "n1", tc.heldFrom, tc.heldTo, msgs[tc.heldStream])
		})
	}
}

// Refusals: 404 for a request the node holds no stream of (unknown, or a
// whole answer, which is never kept), 400 naming the field for a bad body.
func TestReplayRefusals(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 4})))
	whole := r.dispatch("n1", "x")
	require.Equal(t, wire.StatusAccepted, whole.status)
	require.Equal(t, "0", whole.read(t, 2*time.Second).final.Header.Get(wire.HdrSeq))

	long := strings.Repeat("x", wire.MaxRequestIDLen+1)
	for _, tc := range []struct {
		name string
		body string
		code int
		says string
	}{
		{"unknown id", `{"request_id":"nope","from_seq":0,"to_seq":0}`, wire.CodeNotFound, "nope"},
		{"whole answer", `{"request_id":"` + whole.id + `","from_seq":0,"to_seq":0}`, wire.CodeNotFound, whole.id},
		{"not json", `hello`, wire.CodeBadRequest, "replay request"},
		{"empty", ``, wire.CodeBadRequest, "replay request"},
		{"no id", `{"from_seq":0,"to_seq":1}`, wire.CodeBadRequest, "request_id"},
		{"id too long", `{"request_id":"` + long + `","from_seq":0,"to_seq":1}`, wire.CodeBadRequest, "request_id"},
		{"negative from", `{"request_id":"a","from_seq":-1,"to_seq":1}`, wire.CodeBadRequest, "from_seq"},
		{"to before from", `{"request_id":"a","from_seq":3,"to_seq":2}`, wire.CodeBadRequest, "to_seq"},
		{"float", `{"request_id":"a","from_seq":1.5,"to_seq":2}`, wire.CodeBadRequest, "from_seq"},
		{"huge", `{"request_id":"a","from_seq":0,"to_seq":1e308}`, wire.CodeBadRequest, "to_seq"},
		{"unknown field", `{"request_id":"a","from_seq":0,"to_seq":0,"x":1}`, wire.CodeBadRequest, "x"},
		{"trailing data", `{"request_id":"a","from_seq":0,"to_seq":0} {}`, wire.CodeBadRequest, "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := r.askReplay("n1", []byte(tc.body))
			assert.Equal(t, tc.code, codeOf(ans), ans.Header.Get(wire.HdrServiceError))
			assert.Contains(t, ans.Header.Get(wire.HdrServiceError), tc.says)
			assert.Equal(t, wire.StatusError, ans.Header.Get(wire.HdrStatus))
		})
	}
	_, err := whole.sub.NextMsg(50 * time.Millisecond)
	assert.ErrorIs(t, err, nats.ErrTimeout, "a refused replay sends nothing to the client")
}

// A withdrawn attempt (targeted cancel) is not replayable: the client must
// hear nothing more from it.
func TestReplayDroppedOnWithdraw(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))
	c := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, c.status)
	g.waitStarted(t, 1)
	cancel := nats.NewMsg(subject.Default.Cancel(c.id))
	cancel.Header.Set(wire.HdrNode, "n1")
	require.NoError(t, r.nc.PublishMsg(cancel))
	natsembed.Eventually(t, 3*time.Second, func() error {
		if code := codeOf(r.askReplay("n1", replayBody(t, c.id, 0, 0))); code != wire.CodeNotFound {
			return fmt.Errorf("withdrawn stream still replayable (code %d)", code)
		}
		return nil
	})
}

// The compact buffer gives back every held message exactly as kept, its
// chunks' headers rebuilt, through the bounds dropping the oldest and
// the compactions of the payload buffer that follow. The held range is
// worked out here from the bounds' definition: the newest messages, at
// most maxMsgs of them and maxBytes of payload, header keys and values.
func TestReplayBufferKeepsExactly(t *testing.T) {
	for _, tc := range []struct {
		name            string
		maxMsgs, chunks int
		maxBytes        int
		first           int // Fed-Seq of the first chunk (a continuation's)
	}{
		{name: "all held", maxMsgs: 4096, maxBytes: 1 << 20, chunks: 100},
		{name: "count bound, compacted", maxMsgs: 100, maxBytes: 1 << 20, chunks: 1000},
		{name: "continuation", maxMsgs: 100, maxBytes: 1 << 20, chunks: 300, first: 7},
		{name: "byte bound, compacted", maxMsgs: 4096, maxBytes: 6000, chunks: 500},
		{name: "only the final", maxMsgs: 1, maxBytes: 1 << 20, chunks: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplays(Config{ReplayChunks: tc.maxMsgs, ReplayBytes: tc.maxBytes, ReplayStreams: 4, ReplayKeep: time.Minute})
			rep := wire.Reply{Inbox: "_INBOX.c.1", RequestID: "r1", Node: "n1", Takeover: "n0"}
			rep.StartAt(tc.first)
			st := r.begin("r1", rep.Seq())
			var sent []*nats.Msg // by Fed-Seq - tc.first
			buf := make([]byte, 8)
			for i := range tc.chunks {
				copy(buf, fmt.Sprintf("tok%05d", i)) // one buffer reused, as a backend may
				m := rep.Chunk(buf)
				r.keepChunk(st, m)
				sent = append(sent, &nats.Msg{Subject: m.Subject, Header: m.Header, Data: append([]byte(nil), buf...)})
			}
			final := rep.Done(nil, wire.DoneInfo{Tokens: tc.chunks})
			r.keepFinal(st, final)
			sent = append(sent, final)
			last := tc.first + tc.chunks

			held, bytes := 0, 0
			for i := len(sent) - 1; i >= 0 && held < tc.maxMsgs; i-- {
				size := len(sent[i].Data)
				for k, vs := range sent[i].Header {
					for _, v := range vs {
						size += len(k) + len(v)
					}
				}
				if bytes+size > tc.maxBytes {
					break
				}
				held, bytes = held+1, bytes+size
			}
			from := last - held + 1
			require.Positive(t, held)

			got, werr := r.get("r1", from, last)
			require.Nil(t, werr)
			require.Len(t, got, held)
			for i, km := range got {
				want := sent[from-tc.first+i]
				assert.Equal(t, want.Subject, km.subject, "subject of Fed-Seq %d", from+i)
				assert.Equal(t, want.Header, km.header, "headers of Fed-Seq %d", from+i)
				assert.Equal(t, string(want.Data), string(km.data), "payload of Fed-Seq %d", from+i)
			}
			assert.Equal(t, bytes, st.bytes, "bytes counted are the held messages'")
			if from > tc.first {
				_, werr = r.get("r1", from-1, last)
				require.NotNil(t, werr, "Fed-Seq %d was dropped", from-1)
				assert.Equal(t, wire.CodeNotFound, werr.Code)
				assert.Contains(t, werr.Description, fmt.Sprintf("held: %d-%d", from, last))
			}
		})
	}
}
