package router

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// outstanding tracks this router's accepted dispatches until the node's
// completion outcome arrives, for the load policy and least_connections,
// holds a half-open node's probe slot for as long as its probe runs, and
// keeps what a re-placement needs should the node be lost (takeover.go).
type outstanding struct {
	mu sync.Mutex
	m  map[string]outRec // request id → dispatch
}

type outRec struct {
	e       *entry
	expires time.Time
	probe   bool
	// accepted is when the node's accepted ack was read; zero while the
	// ack is awaited (the request's own goroutine then still owns it)
	accepted time.Time
	held     *held
}

// held is what re-placing an accepted request takes when its node is lost:
// the client's request as received and what the placement knew when it
// dispatched. It is built once per dispatch and never changed, so the
// takeover reads it without a lock; it lives only as long as its
// outstanding entry.
type held struct {
	msg        *nats.Msg // the client's request: subject, reply inbox, headers, body (shared, not copied)
	spec       wire.Spec
	capability string
	received   time.Time
	deadline   time.Time
	tried      []*entry // nodes tried (failed or draining) before this dispatch
	attempts   int      // dispatches sent, this one included
	model      string   // the model picked on the node
	instance   string   // the node's agent instance when it was picked (its "node lost" names it)
	resumable  bool     // the node's catalog record said resumable when it was picked
	takeover   string   // the lost node this dispatch took over from, "" for a first placement
}

// lostRec is one accepted request of a lost node, taken out of outstanding.
type lostRec struct {
	requestID string
	e         *entry
	held      *held
}

func newOutstanding() *outstanding { return &outstanding{m: map[string]outRec{}} }

// add counts a dispatch of requestID to e from the moment it is sent; h
// (may be nil) is what a takeover needs once it is accepted.
func (o *outstanding) add(requestID string, e *entry, expires time.Time, probe bool, h *held) {
	e.outstanding.Add(1)
	o.mu.Lock()
	old, dup := o.m[requestID]
	o.m[requestID] = outRec{e: e, expires: expires, probe: probe, held: h}
	o.mu.Unlock()
	if dup { // a client reused a request id: the older dispatch stops counting
		release(old)
	}
}

// has reports whether a dispatch of requestID is outstanding: sent and
// not yet completed.
func (o *outstanding) has(requestID string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.m[requestID]
	return ok
}

// accept marks the dispatch of requestID to node accepted: from now on a
// loss of the node hands it to a takeover. False when the dispatch is gone
// already (its completion outcome came before the ack was read).
func (o *outstanding) accept(requestID, node string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.m[requestID]
	if !ok || r.e.id != node {
		return false
	}
	r.accepted = now
	o.m[requestID] = r
	return true
}

// takeLost takes every dispatch node accepted before since out of the
// count and returns them: the node was lost and only the caller acts on
// them now. Dispatches whose ack is still awaited stay: their placement
// sees the ack fail and retries by itself.
func (o *outstanding) takeLost(node string, since time.Time) []lostRec {
	var lost []lostRec
	var gone []outRec
	o.mu.Lock()
	for id, r := range o.m {
		if r.e.id != node || r.accepted.IsZero() || r.accepted.After(since) {
			continue
		}
		delete(o.m, id)
		gone = append(gone, r)
		lost = append(lost, lostRec{requestID: id, e: r.e, held: r.held})
	}
	o.mu.Unlock()
	for _, r := range gone {
		release(r)
	}
	return lost
}

// done ends the dispatch of requestID on node; other nodes' outcomes for the
// same id (duplicates) do not touch it.
func (o *outstanding) done(requestID, node string) {
	o.mu.Lock()
	r, ok := o.m[requestID]
	if ok && r.e.id == node {
		delete(o.m, requestID)
	} else {
		ok = false
	}
	o.mu.Unlock()
	if ok {
		release(r)
	}
}

// sweep drops dispatches whose completion never arrived (lost outcome, dead node).
func (o *outstanding) sweep(now time.Time) int {
	var gone []outRec
	o.mu.Lock()
	for id, r := range o.m {
		if now.After(r.expires) {
			gone = append(gone, r)
			delete(o.m, id)
		}
	}
	o.mu.Unlock()
	for _, r := range gone {
		release(r)
	}
	return len(gone)
}

func (o *outstanding) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.m)
}

func release(r outRec) {
	r.e.outstanding.Add(-1)
	if r.probe {
		r.e.probing.Store(false)
	}
}

// onOutcome runs on the outcome subscription: completions end outstanding
// dispatches, free a slot in the node's reported load and wake one queued
// request the node serves. A node agent sends one outcome (a JSON object)
// or a batch of them (a JSON array); each counts on its own. It does not
// judge the outcomes as health does (record.ParseOutcomes, not
// DecodeOutcomes): a completion with a field it does not read out of range
// or of the wrong type must still end its dispatch. It only parses and
// updates memory, never blocks.
func (s *Service) onOutcome(m *nats.Msg) {
	// The subject names the node (in secured mode only that node may
	// publish on it): an outcome, or an element of a batch, speaking for
	// another node is ignored, so no node can end another's dispatch or
	// report it silent.
	node := subject.LastToken(m.Subject)
	all := record.ParseOutcomes(m.Data)
	for i := range all {
		s.outcome(node, &all[i])
	}
}

// outcome applies one outcome node sent (its subject's last token).
func (s *Service) outcome(node string, h *record.Outcome) {
	if h.Kind != record.OutcomeCompleted || h.RequestID == "" {
		return
	}
	if h.NodeID == "" {
		h.NodeID = node
	} else if h.NodeID != node {
		return
	}
	s.out.done(h.RequestID, h.NodeID)
	s.answered.mark(h.RequestID, h.NodeID, h.Silent)
	if h.AtOnce {
		// Answered where the dispatch arrived, acked done after its final:
		// no ack counted it in the node's load, and its placing router woke
		// the queue for its slot already.
		return
	}
	if e := s.cache.lookup(h.NodeID); e != nil {
		e.completed()
		s.wakeFor(e, 1)
	}
}

// sweepOutstanding expires forgotten dispatches (run every SweepInterval).
func (s *Service) sweepOutstanding(_ context.Context, now time.Time) {
	if n := s.out.sweep(now); n > 0 {
		s.log.Debug().Int("dispatches", n).Msg("outstanding dispatches expired without a completion outcome")
	}
	// A node unhealthy from its failures still heartbeats; when it then
	// dies, health has nothing new to write (the state stays unhealthy), so
	// no KV update tells this router: judge the silence here.
	for _, lost := range s.cache.silentWithRequests(now, s.cfg.LostSilence) {
		s.nodeLost(lost.e, lost.how)
	}
	s.cache.refreshFleet()
}
