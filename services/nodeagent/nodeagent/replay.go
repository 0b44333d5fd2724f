package nodeagent

import (
	"bytes"
	"container/list"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// replayStream is one request's kept messages: seqs first … first+len(msgs)-1.
type replayStream struct {
	id       string
	first    int // Fed-Seq of msgs[0]
	msgs     []replayMsg
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

// keepMsg appends m (as sent, Fed-Seq next in order) to st, dropping the
// oldest messages beyond the per-stream bounds. The payload is copied:
// a backend may reuse its buffer.
func (r *replays) keepMsg(st *replayStream, m *nats.Msg) {
	km := replayMsg{subject: m.Subject, header: m.Header, data: bytes.Clone(m.Data), size: len(m.Data)}
	for k, vs := range m.Header {
		for _, v := range vs {
			km.size += len(k) + len(v)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st.msgs = append(st.msgs, km)
	st.bytes += km.size
	for len(st.msgs) > 0 && (len(st.msgs) > r.maxMsgs || st.bytes > r.maxBytes) {
		st.bytes -= st.msgs[0].size
		st.msgs[0] = replayMsg{}
		st.msgs = st.msgs[1:]
		st.first++
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
	last := st.first + len(st.msgs) - 1
	if from < st.first || to > last {
		return nil, wire.Errorf(wire.CodeNotFound, "request %s: Fed-Seq %d-%d not held for replay (held: %s)",
			id, from, to, heldRange(st.first, last))
	}
	// The entries are never changed once kept: a copy of the slice header
	// is enough to publish them without the lock.
	return append([]replayMsg(nil), st.msgs[from-st.first:to-st.first+1]...), nil
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
