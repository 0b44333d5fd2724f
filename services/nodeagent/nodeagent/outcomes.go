package nodeagent

import (
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Completed outcomes can go out batched (Config.OutcomeWindow, DESIGN
// §9.2): every completion reaches health and every router, so one message
// per request is a publish and two or more deliveries per request on top of
// the request itself. The first outcome after a quiet spell goes out at
// once, alone, and opens a window; outcomes that finish within it wait for
// its end, or go as soon as OutcomeBatchMax of them wait. A window that
// ends with outcomes in it opens the next one; one that ends empty closes,
// so a lightly loaded node sends every outcome at once. With no window
// every outcome goes at once.

// OutcomeBatchMax bounds the outcomes of one batch message.
const OutcomeBatchMax = 32

// outcomeBatch is a node's outcomes waiting for their window to end. The
// zero value is ready. mu is held through each publish, so outcomes leave
// in the order they were taken and a flush returns only once what was
// taken before it is out (Stop's flush before the deregister waits for a
// window's flush that is publishing).
type outcomeBatch struct {
	mu    sync.Mutex
	buf   []record.Outcome
	open  bool        // a window is open: outcomes wait in buf
	timer *time.Timer // ends the window; runs flushOutcomes
}

// sendOutcome publishes o at once or with the outcomes of its window. A
// draining node sends everything at once: its last outcomes must be out
// before it deregisters.
func (s *Service) sendOutcome(o record.Outcome) {
	if s.cfg.OutcomeWindow <= 0 { // the default: no window, no locks
		s.publishOutcomes([]record.Outcome{o})
		return
	}
	draining := s.isDraining()
	b := &s.outcomes
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case draining:
		out := append(b.buf, o)
		b.buf = nil
		s.publishOutcomes(out)
	case !b.open:
		b.open = true
		if b.timer == nil {
			b.timer = time.AfterFunc(s.cfg.OutcomeWindow, s.flushOutcomes)
		} else {
			b.timer.Reset(s.cfg.OutcomeWindow)
		}
		s.publishOutcomes([]record.Outcome{o})
	default:
		b.buf = append(b.buf, o)
		if len(b.buf) >= OutcomeBatchMax {
			out := b.buf
			b.buf = nil
			s.publishOutcomes(out)
		}
	}
}

// flushOutcomes ends a window (its timer, and Stop before the deregister):
// what waited goes out, and the next window opens when something did and
// the node is not draining.
func (s *Service) flushOutcomes() {
	draining := s.isDraining()
	b := &s.outcomes
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.buf
	b.buf = nil
	if len(out) == 0 || draining {
		b.open = false
		if b.timer != nil {
			b.timer.Stop()
		}
	} else {
		b.timer.Reset(s.cfg.OutcomeWindow)
	}
	s.publishOutcomes(out)
}

// publishOutcomes sends one outcome as a JSON object, several as a JSON
// array of them (record.DecodeOutcomes reads both).
func (s *Service) publishOutcomes(out []record.Outcome) {
	if len(out) == 0 {
		return
	}
	var v any = out
	if len(out) == 1 {
		v = out[0]
	}
	if err := wire.PublishJSON(s.nc, s.cfg.Subjects.Outcome(s.cfg.NodeID), v); err != nil && !s.nc.IsClosed() {
		s.log.Warn().Err(err).Str(logging.KeyRequest, out[0].RequestID).Int("outcomes", len(out)).Msg("publish outcome")
	}
}
