package nodeagent

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// maxReplayBody bounds a replay request's body: an id of MaxRequestIDLen
// bytes and two numbers fit many times over.
const maxReplayBody = 4096

// replays keeps, per streamed request, the messages the node sent to the
// client (chunks and the final), so a client that missed some (a
// nats-server failover) can have them sent again (fed.node.<id>.replay).
//
// Bounds: per stream at most maxMsgs messages and maxBytes bytes (payload
// plus header keys and values), the oldest dropped first; at most
// maxStreams finished streams, each kept keep after its final, the oldest
// finished dropped first. Streams in flight are bounded by the node's
// MaxConcurrency. It has its own lock: the micro callbacks never wait on
// Service.mu for it.
type replays struct {
	maxMsgs, maxBytes, maxStreams int
	keep                          time.Duration

	mu       sync.Mutex
	streams  map[string]*replayStream // by request id
	finished *list.List               // of *replayStream, oldest finished first
}

// replayStream is one request's kept messages, Fed-Seq first … first +
// kept() - 1: its chunks compactly, their payloads back to back in one
// buffer and their headers rebuilt on replay from the stream's (a chunk's
// differ only in Fed-Seq), then the final whole. Nothing is kept per chunk
// that the garbage collector must trace: a node keeps up to 4096 chunks of
// each of 256 streams, and a header map per kept chunk was most of the
// per-token cost of a stream (issue 16).
type replayStream struct {
	id       string
	subject  string      // every message's: the request's reply subject
	header   nats.Header // a chunk's headers but Fed-Seq; nil until the first chunk
	hdrSize  int         // bytes of header's keys and values
	first    int         // Fed-Seq of the oldest message kept
	data     []byte      // chunk payloads back to back
	ends     []int       // end of each chunk's payload in data; kept: ends[lo:]
	lo       int
	final    *replayMsg // once kept
	bytes    int
	doneAt   time.Time     // when the final was kept; zero while in flight
	finished *list.Element // in replays.finished once done
}

type replayMsg struct {
	subject string
	header  nats.Header
	data    []byte
	size    int
}

func newReplays(c Config) *replays {
	return &replays{maxMsgs: c.ReplayChunks, maxBytes: c.ReplayBytes, maxStreams: c.ReplayStreams, keep: c.ReplayKeep,
		streams: map[string]*replayStream{}, finished: list.New()}
}

// begin starts keeping a stream's messages. A stream already kept under
// the same id (an earlier attempt on this node) is replaced: a replay
// serves the latest. first is the Fed-Seq of its first message (0, or
// where a continuation starts).
func (r *replays) begin(id string, first int) *replayStream {
	st := &replayStream{id: id, first: first}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(time.Now())
	if old := r.streams[id]; old != nil {
		r.remove(old)
	}
	r.streams[id] = st
	return st
}

// headerSize is the bytes of h's keys and values, what the bounds count.
func headerSize(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// seqSize is what a chunk's Fed-Seq header adds to its size.
func seqSize(seq int) int {
	digits := 1
	for ; seq >= 10; seq /= 10 {
		digits++
	}
	return len(wire.HdrSeq) + digits
}

// chunks is how many chunks st keeps.
func (st *replayStream) chunks() int { return len(st.ends) - st.lo }

// kept is how many messages st keeps.
func (st *replayStream) kept() int {
	if st.final != nil {
		return st.chunks() + 1
	}
	return st.chunks()
}

// chunk is kept chunk i (0 the oldest): its payload and size.
func (st *replayStream) chunk(i int) ([]byte, int) {
	k := st.lo + i
	start := 0
	if k > 0 {
		start = st.ends[k-1]
	}
	data := st.data[start:st.ends[k]:st.ends[k]] // capped: a reader's append never writes into the next
	return data, len(data) + st.hdrSize + seqSize(st.first+i)
}

// keepChunk appends chunk m (as sent, Fed-Seq next in order) to st,
// dropping the oldest messages beyond the per-stream bounds. The payload is
// copied: a backend may reuse its buffer.
func (r *replays) keepChunk(st *replayStream, m *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.header == nil {
		st.subject = m.Subject
		st.header = nats.Header(http.Header(m.Header).Clone())
		st.header.Del(wire.HdrSeq)
		st.hdrSize = headerSize(st.header)
	}
	st.data = append(st.data, m.Data...)
	st.ends = append(st.ends, len(st.data))
	st.bytes += len(m.Data) + st.hdrSize + seqSize(st.first+st.chunks()-1)
	r.bound(st)
}

// keepFinal keeps st's final m, dropping the oldest chunks beyond the
// per-stream bounds.
func (r *replays) keepFinal(st *replayStream, m *nats.Msg) {
	km := &replayMsg{subject: m.Subject, header: m.Header, data: bytes.Clone(m.Data), size: len(m.Data) + headerSize(m.Header)}
	r.mu.Lock()
	defer r.mu.Unlock()
	st.final = km
	st.bytes += km.size
	r.bound(st)
}

// bound drops st's oldest messages beyond the per-stream bounds; r.mu held.
func (r *replays) bound(st *replayStream) {
	for st.kept() > 0 && (st.kept() > r.maxMsgs || st.bytes > r.maxBytes) {
		if st.chunks() == 0 {
			st.bytes -= st.final.size
			st.final = nil
		} else {
			_, size := st.chunk(0)
			st.bytes -= size
			st.lo++
		}
		st.first++
	}
	// Drop the payloads of dropped chunks once they are most of the
	// buffer: a copy per chunk amortised, and replays being served keep
	// the old buffer they read.
	if st.lo > 64 && st.lo > st.chunks() {
		start := st.ends[st.lo-1]
		ends := make([]int, st.chunks(), max(2*st.chunks(), 64))
		for i, e := range st.ends[st.lo:] {
			ends[i] = e - start
		}
		st.data = append(make([]byte, 0, 2*(len(st.data)-start)), st.data[start:]...)
		st.ends, st.lo = ends, 0
	}
}

// finish marks st done (its final was sent, or none will be): it is kept
// keep from now, among at most maxStreams finished streams.
func (r *replays) finish(st *replayStream) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[st.id] != st || st.finished != nil {
		return // replaced meanwhile, or finished already
	}
	st.doneAt = now
	st.finished = r.finished.PushBack(st)
	r.expire(now)
	for r.finished.Len() > r.maxStreams {
		r.remove(r.finished.Front().Value.(*replayStream))
	}
}

// drop forgets st at once (a withdrawn attempt: the client must hear
// nothing more from it).
func (r *replays) drop(st *replayStream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[st.id] == st {
		r.remove(st)
	}
}

// remove forgets st; r.mu held.
func (r *replays) remove(st *replayStream) {
	delete(r.streams, st.id)
	if st.finished != nil {
		r.finished.Remove(st.finished)
		st.finished = nil
	}
}

// expire drops the finished streams kept longer than keep; r.mu held.
func (r *replays) expire(now time.Time) {
	for e := r.finished.Front(); e != nil; e = r.finished.Front() {
		st := e.Value.(*replayStream)
		if now.Sub(st.doneAt) < r.keep {
			return
		}
		r.remove(st)
	}
}

// get returns the kept messages from … to of request id, or a 404 when
// the node does not hold the stream or holds only part of the range.
func (r *replays) get(id string, from, to int) ([]replayMsg, *wire.Error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expire(time.Now())
	st := r.streams[id]
	if st == nil {
		return nil, wire.Errorf(wire.CodeNotFound, "request %s: no stream held for replay", id)
	}
	last := st.first + st.kept() - 1
	if from < st.first || to > last {
		return nil, wire.Errorf(wire.CodeNotFound, "request %s: Fed-Seq %d-%d not held for replay (held: %s)",
			id, from, to, heldRange(st.first, last))
	}
	// Payloads are never changed once kept (a compaction copies them), so
	// the messages can be published without the lock.
	msgs := make([]replayMsg, 0, to-from+1)
	for seq := from; seq <= to; seq++ {
		i := seq - st.first
		if i == st.chunks() {
			msgs = append(msgs, *st.final)
			continue
		}
		data, size := st.chunk(i)
		h := nats.Header(http.Header(st.header).Clone())
		h[wire.HdrSeq] = []string{strconv.Itoa(seq)}
		msgs = append(msgs, replayMsg{subject: st.subject, header: h, data: data, size: size})
	}
	return msgs, nil
}

func heldRange(first, last int) string {
	if last < first {
		return "none"
	}
	return fmt.Sprintf("%d-%d", first, last)
}

// decodeReplayRequest reads a replay request's body strictly
// (decodeStrict), then 0 ≤ from_seq ≤ to_seq. Anything else is a 400
// naming the field.
func decodeReplayRequest(data []byte) (api.ReplayRequest, *wire.Error) {
	var rr api.ReplayRequest
	if werr := decodeStrict("replay request", data, maxReplayBody, &rr, &rr.RequestID); werr != nil {
		return api.ReplayRequest{}, werr
	}
	bad := func(format string, args ...any) (api.ReplayRequest, *wire.Error) {
		e := wire.Errorf(wire.CodeBadRequest, "replay request: "+format, args...)
		e.RequestID = rr.RequestID
		return api.ReplayRequest{}, e
	}
	switch {
	case rr.FromSeq < 0:
		return bad("from_seq must be >= 0, got %d", rr.FromSeq)
	case rr.ToSeq < rr.FromSeq:
		return bad("to_seq must be >= from_seq (%d), got %d", rr.FromSeq, rr.ToSeq)
	}
	return rr, nil
}

// decodeStrict reads a request body a node takes (replay, status) into v:
// at most limit bytes, one JSON object, no unknown fields, nothing after it,
// *id (its request_id) 1–MaxRequestIDLen bytes. A failure is a 400 naming
// what and the field, with the request id when it is a valid one.
func decodeStrict(what string, data []byte, limit int, v any, id *string) *wire.Error {
	bad := func(format string, args ...any) *wire.Error {
		e := wire.Errorf(wire.CodeBadRequest, what+": "+format, args...)
		if len(*id) <= wire.MaxRequestIDLen {
			e.RequestID = *id
		}
		return e
	}
	if len(data) > limit {
		return bad("body is longer than %d bytes", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bad("%v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("data after the JSON object")
	}
	switch {
	case *id == "":
		return bad("request_id is missing")
	case len(*id) > wire.MaxRequestIDLen:
		return bad("request_id is longer than %d bytes", wire.MaxRequestIDLen)
	}
	return nil
}

// handleReplay serves fed.node.<id>.replay: it publishes the asked-for
// messages again, in order, to the request's reply subject exactly as first
// sent plus Fed-Replay: true, then answers how many. Memory only; no waits
// beyond publishing into the connection's buffer.
func (s *Service) handleReplay(req micro.Request) {
	rr, werr := decodeReplayRequest(req.Data())
	if werr == nil {
		var msgs []replayMsg
		if msgs, werr = s.replay.get(rr.RequestID, rr.FromSeq, rr.ToSeq); werr == nil {
			werr = s.resend(rr, msgs)
		}
	}
	if werr != nil {
		werr.Node = s.cfg.NodeID
		werr.Description = "node " + s.cfg.NodeID + ": " + werr.Description
		if werr.RequestID == "" && len(rr.RequestID) <= wire.MaxRequestIDLen {
			werr.RequestID = rr.RequestID
		}
		s.log.Debug().Str(logging.KeyRequest, werr.RequestID).Int("code", werr.Code).Str("error", werr.Description).Msg("replay refused")
		if err := wire.RespondError(s.nc, req.Reply(), werr); err != nil {
			s.log.Debug().Err(err).Str(logging.KeyRequest, werr.RequestID).Msg("replay refusal not sent")
		}
		return
	}
	s.log.Debug().Str(logging.KeyRequest, rr.RequestID).Int("from_seq", rr.FromSeq).Int("to_seq", rr.ToSeq).Msg("replayed")
	_ = req.RespondJSON(api.ReplayResponse{Sent: rr.ToSeq - rr.FromSeq + 1})
}

// resend publishes msgs again with Fed-Replay: true. They go out before the
// replay's answer on the same connection, so the client has them when it
// reads the answer.
func (s *Service) resend(rr api.ReplayRequest, msgs []replayMsg) *wire.Error {
	for i, km := range msgs {
		h := nats.Header(http.Header(km.header).Clone())
		h.Set(wire.HdrReplay, "true")
		if err := s.nc.PublishMsg(&nats.Msg{Subject: km.subject, Header: h, Data: km.data}); err != nil {
			e := wire.Errorf(wire.CodeInternal, "request %s: replay sent %d of %d messages: %v", rr.RequestID, i, len(msgs), err)
			e.RequestID = rr.RequestID
			return e
		}
	}
	return nil
}
