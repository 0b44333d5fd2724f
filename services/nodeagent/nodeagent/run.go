package nodeagent

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/tracing"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// job is one accepted request.
type job struct {
	call       backend.Call
	reply      wire.Reply
	tenant     string
	attempt    int
	routeScore string
	budget     time.Duration // the client's own Fed-Timeout-Ms; 0 when it sent none
	start      time.Time
	ctx        context.Context
	cancel     func(cause error)
	started    bool // first token emitted; guarded by Service.mu
	span       tracing.Span
	cancelKey  string // Fed-Cancel-Key: a cancel without it is ignored
	// The request's body in fed_blobs (Fed-Body-Blob; bodyOut false: the
	// body came inline), or why its reference is bad; acceptBlob: the
	// client reads a large answer from fed_blobs (Fed-Accept-Blob). See blob.go.
	body       blobs.Ref
	bodyOut    bool
	bodyErr    error
	acceptBlob bool
	// ackTo is the reply subject of a dispatch answered at once (atOnce)
	// whose ack has not gone out: ackDone sends Fed-Status: done there after
	// the final (DESIGN §4); "" once acked. ackBy is its Fed-Ack-Deadline:
	// a final that would go out at or after it is not sent, nor the ack.
	// atOnce: the done ack went out (the outcome says so).
	ackTo  string
	ackBy  time.Time
	atOnce bool
}

// run executes an accepted request on the backend and ends it with exactly
// one final message to the client, then one outcome event.
func (s *Service) run(j *job) {
	defer j.span.End()
	defer j.cancel(nil)
	defer s.release(j)
	out := &output{s: s, j: j}
	if j.call.Stream {
		out.kept = s.replay.begin(j.call.RequestID, j.reply.Seq())
	}
	res, err := s.generate(j, out) // the backend, and the body and answer out of band (blob.go)
	latency := time.Since(j.start)
	var werr *wire.Error
	fault := ""
	if err != nil {
		var deadlineHit bool
		werr, deadlineHit = s.failure(j, err)
		fault = faultOf(werr.Code, deadlineHit, j.budget)
		j.span.Fail(werr.Code, "failed")
	} else if j.call.Stream {
		// Decode speed from streams only: a whole answer's pieces can all
		// come at once (an embedding is one), so latency − ttft is ~0 and
		// tokens/s explodes (issue 14 measured 37 M tokens/s).
		s.observe(res.Tokens, latency-out.ttft)
	}
	withdrawn := context.Cause(j.ctx) == errWithdrawn
	if j.ackTo != "" && !withdrawn && !time.Now().Before(j.ackBy) {
		// Answered at once but no sooner than the ack deadline (the node
		// was frozen, or its clock is ahead): the router may have placed the
		// request elsewhere, so the final must not go out; it is as if the
		// dispatch had come late (DESIGN §3.2).
		withdrawn = true
		n := s.lateDispatches.Add(1)
		s.log.Debug().Str(logging.KeyRequest, j.call.RequestID).Time("ack_deadline", j.ackBy).
			Int64("late_dispatches", n).Msg("answer ready after its ack deadline: not sent")
	}
	if out.kept != nil && withdrawn {
		s.replay.drop(out.kept)
	}
	if out.sendErr == nil && !withdrawn {
		m := out.final(res, werr, latency)
		if out.kept != nil {
			s.replay.keepFinal(out.kept, m)
		}
		s.answered.add(j.call.RequestID, time.Now()) // before release: a status question sees it held throughout
		// Finished before it is sent: a client that has the final sees
		// the buffer as it will stay (its bounds counted with this stream).
		if out.kept != nil {
			s.replay.finish(out.kept)
		}
		s.sendFinal(j, m)
		s.ackDone(j) // answered at once: the ack goes after the final
	} else if out.answer != nil {
		s.deleteAnswer(j, out.answer.Name) // nobody will be told where it is
	}
	if out.kept != nil && !withdrawn {
		s.replay.finish(out.kept) // no final sent (a failed publish): still done
	}
	s.publishOutcome(j, res, werr, fault, out.sendErr != nil || withdrawn, latency, out.ttft)
	s.logFinished(j, res, werr, latency)
}

// output is what a job's backend has emitted so far: the first token's
// time, and the whole answer when the client did not ask for a stream.
type output struct {
	s       *Service
	j       *job
	body    []byte        // the whole answer, not streamed
	ttft    time.Duration // time to the first non-empty chunk
	emitted bool
	sendErr error // a publish to the client failed
	// kept is the stream's replay buffer entry; nil for a whole answer,
	// which is not kept.
	kept *replayStream
	// answer is the blob holding the whole answer (body is then nil); nil
	// when the answer goes inline.
	answer *blobs.Ref
	// chunk is the last chunk published, reused for the next (NextChunk):
	// the replay buffer copies what it keeps.
	chunk *nats.Msg
	// pieceMax bounds one chunk message's payload (the inline limit of
	// max_payload); 0 until the first chunk.
	pieceMax int
}

// emit forwards one chunk (streamed) or keeps it (whole answer).
func (o *output) emit(chunk []byte) error {
	j := o.j
	if err := j.ctx.Err(); err != nil {
		return context.Cause(j.ctx)
	}
	if len(chunk) == 0 {
		return nil // an empty chunk would read as the ADR-47 end sentinel
	}
	first := !o.emitted
	if first {
		o.emitted = true
		o.ttft = time.Since(j.start)
		o.s.mu.Lock()
		j.started = true
		o.s.waiting--
		o.s.mu.Unlock()
	}
	if !j.call.Stream {
		o.body = append(o.body, chunk...)
		return nil
	}
	if o.pieceMax == 0 {
		o.pieceMax = int(blobs.InlineLimit(o.s.nc.MaxPayload()))
	}
	// A piece larger than one message (an audio answer in one emit) goes
	// as several chunks, each cut on a UTF-8 boundary when it is text.
	for len(chunk) > 0 {
		n := pieceLen(chunk, o.pieceMax)
		o.chunk = j.reply.NextChunk(o.chunk, chunk[:n])
		m := o.chunk
		chunk = chunk[n:]
		if o.kept != nil {
			// Kept before it is sent, so a client that sees a later
			// message can already have it again.
			o.s.replay.keepChunk(o.kept, m)
		}
		if err := o.s.nc.PublishMsg(m); err != nil {
			o.sendErr = err
			j.cancel(errLost)
			return errLost
		}
		if first {
			// The first token's latency is what users feel: push it out now
			// rather than when the write buffer fills.
			_ = o.s.nc.FlushTimeout(time.Second)
			first = false
		}
	}
	return nil
}

// final is the job's last message: done (with the whole answer when not
// streamed) or the error werr.
func (o *output) final(res backend.Result, werr *wire.Error, latency time.Duration) *nats.Msg {
	j := o.j
	if werr != nil {
		return j.reply.Fail(werr.Code, werr.Description)
	}
	var data []byte
	if !j.call.Stream {
		data = o.body
	}
	m := j.reply.Done(data, wire.DoneInfo{Tokens: res.Tokens, LatencyMs: ms(latency), TTFTMs: ms(o.ttft), RouteScore: j.routeScore,
		ContentType: res.ContentType})
	if o.answer != nil {
		o.answer.SetAnswer(m.Header) // Fed-Answer-Blob, Fed-Answer-Size, Fed-Answer-Key
	}
	return m
}

// ackNow acks a dispatch answered at once the usual way (accepted), before
// something that may take a while (storing a large answer in fed_blobs): a
// router must not wait on it until its ack deadline.
func (s *Service) ackNow(j *job) {
	if j.ackTo == "" || !time.Now().Before(j.ackBy) {
		return // acked already, or too late: run sends no final then either
	}
	s.mu.Lock()
	inFlight := s.active
	s.mu.Unlock()
	m := &nats.Msg{Subject: j.ackTo, Header: s.ackHeader(wire.StatusAccepted, inFlight)}
	j.ackTo = ""
	if err := s.nc.PublishMsg(m); err != nil && !s.nc.IsClosed() {
		s.log.Warn().Err(err).Str(logging.KeyRequest, j.call.RequestID).Msg("ack not sent")
	}
}

// doneAck is the header of a done ack (shared: a publish only reads it).
var doneAck = nats.Header{wire.HdrStatus: []string{wire.StatusDone}}

// ackDone acks a dispatch answered at once, after its final: accepted and
// answered (DESIGN §4). Its router has settled the request with it, so the
// outcome may then wait in a window (outcomes.go).
func (s *Service) ackDone(j *job) {
	if j.ackTo == "" {
		return
	}
	m := &nats.Msg{Subject: j.ackTo, Header: doneAck}
	j.ackTo = ""
	if err := s.nc.PublishMsg(m); err != nil {
		if !s.nc.IsClosed() {
			s.log.Warn().Err(err).Str(logging.KeyRequest, j.call.RequestID).Msg("done ack not sent")
		}
		return
	}
	j.atOnce = true
}

func (s *Service) sendFinal(j *job, m *nats.Msg) {
	if err := s.nc.PublishMsg(m); err != nil && !s.nc.IsClosed() {
		s.log.Warn().Err(err).Str(logging.KeyRequest, j.call.RequestID).Msg("final message not sent")
	}
}

// publishOutcome sends the finished request's event for health and the
// routers.
// silent: the client got no final from this node.
func (s *Service) publishOutcome(j *job, res backend.Result, werr *wire.Error, fault string, silent bool, latency, ttft time.Duration) {
	o := record.Outcome{Kind: record.OutcomeCompleted, NodeID: s.cfg.NodeID, RequestID: j.call.RequestID, OK: werr == nil, Silent: silent,
		Capability: j.call.Capability, Model: j.call.Model, Tenant: j.tenant, Attempt: j.attempt,
		LatencyMs: ms(latency), TTFTMs: ms(ttft), Tokens: res.Tokens, Stream: j.call.Stream, AtOnce: j.atOnce, Time: time.Now().UTC()}
	if werr != nil {
		o.Code, o.Error, o.Fault = werr.Code, werr.Description, fault
	}
	s.metrics.observe(&o)
	s.sendOutcome(o) // batched with the node's other outcomes of a few ms (outcomes.go)
}

// logFinished logs a request's end: failures other than a client's cancel
// at warn, the rest at debug.
func (s *Service) logFinished(j *job, res backend.Result, werr *wire.Error, latency time.Duration) {
	ev := s.log.Debug()
	if werr != nil && werr.Code != wire.CodeCanceled {
		ev = s.log.Warn().Int("code", werr.Code).Str("error", werr.Description)
	}
	ev.Str(logging.KeyRequest, j.call.RequestID).Str(logging.KeyModel, j.call.Model).Int("tokens", res.Tokens).
		Dur(logging.KeyElapsed, latency).Msg("request finished")
}

// failure turns a backend error into the final error: the reason the
// context ended wins (cancel, deadline, drain), else the backend's code.
// deadlineHit says the request's own deadline ended it (not a backend's
// timeout).
func (s *Service) failure(j *job, err error) (_ *wire.Error, deadlineHit bool) {
	var we *wire.Error
	if j.ctx.Err() != nil {
		cause := context.Cause(j.ctx)
		deadlineHit = cause == errDeadline
		if !errors.As(cause, &we) {
			we = errCanceled
		}
	} else if !errors.As(err, &we) {
		we = &wire.Error{Code: wire.CodeInternal, Description: "backend " + s.cfg.Backend.Name() + ": " + err.Error()}
	}
	out := *we
	out.RequestID, out.Node = j.call.RequestID, s.cfg.NodeID
	return &out, deadlineHit
}

// defaultTimeoutSlack: a client budget within this of wire.DefaultTimeout
// is the default, not a shorter deadline of the client's choosing. The SDK
// sends what is left of its context's deadline, so a call without one
// arrives as 29 999 ms, not 30 000.
const defaultTimeoutSlack = time.Second

// faultOf says whose failure a failed request is (record.Outcome.Fault), so
// health never counts what the client caused against the node:
//
//   - client: 499 (canceled); a 504 from the request's own deadline when the
//     client asked for less than wire.DefaultTimeout (it allowed less time
//     than the node needed); a backend's 400, 404, 413 or 422 (the request is
//     bad).
//   - node: everything else: 5xx, a backend crash or stall (its own 504), the
//     default deadline expiring, a backend's 401/403 (the node's own
//     misconfiguration, reported as 500), 429 (the model server is full).
//
// deadlineHit: the job's own deadline ended it; budget: the client's
// Fed-Timeout-Ms, 0 when it sent none.
func faultOf(code int, deadlineHit bool, budget time.Duration) string {
	switch code {
	case wire.CodeCanceled, wire.CodeBadRequest, wire.CodeNotFound, wire.CodeTooLarge, http422:
		return record.FaultClient
	case wire.CodeTimeout:
		if deadlineHit && budget > 0 && budget < wire.DefaultTimeout-defaultTimeoutSlack {
			return record.FaultClient
		}
	}
	return record.FaultNode
}

// http422 is an OpenAI-compatible server's "unprocessable" request; the
// openai backend reports it as 400, a custom backend may pass it on.
const http422 = 422

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
