package nodeagent

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// Completed outcomes can go out batched (Config.OutcomeWindow, DESIGN
// §9.2): every completion reaches health and every router, so one message
// per request is a publish and two or more deliveries per request on top of
// the request itself. The first outcome after a quiet spell goes out at
// once, alone, and opens a window; outcomes that finish within it wait for
// its end, or go as soon as OutcomeBatchMax of them wait. A window that
// ends with outcomes in it opens the next one; one that ends empty closes,
// so a lightly loaded node sends every outcome at once.
//
// Without a window (the default) every outcome goes at once, except those
// of requests answered at once (AtOnce): their router settled them with
// the done ack that followed the final, so nothing but statistics waits for
// them, and they wait in windows of AtOnceOutcomeWindow. An outcome that
// goes at once takes those waiting with it.

// OutcomeBatchMax bounds the outcomes of one batch message.
const OutcomeBatchMax = 32

// AtOnceOutcomeWindow is the window of the outcomes of requests answered at
// once when Config.OutcomeWindow is 0.
const AtOnceOutcomeWindow = 5 * time.Millisecond

// outcomeBatch is a node's outcomes waiting for their window to end. The
// zero value is ready. mu is held through each publish, so outcomes leave
// in the order they were taken and a flush returns only once what was
// taken before it is out (Stop's flush before the deregister waits for a
// window's flush that is publishing).
type outcomeBatch struct {
	mu     sync.Mutex
	buf    []record.Outcome
	open   bool          // a window is open: outcomes wait in buf
	window time.Duration // the open window's length
	timer  *time.Timer   // ends the window; runs flushOutcomes
	// waiting: buf is not empty (read without mu by outcomes that go at
	// once, so the default path takes no lock while nothing waits)
	waiting atomic.Bool
}

// sendOutcome publishes o at once or with the outcomes of its window. A
// draining node sends everything at once: its last outcomes must be out
// before it deregisters.
func (s *Service) sendOutcome(o record.Outcome) {
	window := s.cfg.OutcomeWindow
	if window <= 0 && o.AtOnce {
		window = AtOnceOutcomeWindow
	}
	b := &s.outcomes
	if window <= 0 && !b.waiting.Load() { // the default: no window, no locks
		s.publishOutcomes([]record.Outcome{o})
		return
	}
	draining := s.isDraining()
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case draining || window <= 0:
		b.buf = append(b.buf, o)
		b.waiting.Store(false)
		s.publishOutcomes(b.buf)
		b.reuse()
	case !b.open:
		b.open, b.window = true, window
		if b.timer == nil {
			b.timer = time.AfterFunc(window, s.flushOutcomes)
		} else {
			b.timer.Reset(window)
		}
		s.publishOutcomes([]record.Outcome{o})
	default:
		if b.buf == nil {
			b.buf = make([]record.Outcome, 0, OutcomeBatchMax)
		}
		b.buf = append(b.buf, o)
		b.waiting.Store(true)
		if len(b.buf) >= OutcomeBatchMax {
			b.waiting.Store(false)
			s.publishOutcomes(b.buf)
			b.reuse()
		}
	}
}

// reuse empties buf once its outcomes are out (publishOutcomes encodes
// them before it returns, and mu is held), keeping its array for the next
// window: a window's batch grown from nil again cost a copy of every
// outcome per doubling. Cleared, so it holds no strings of sent outcomes.
func (b *outcomeBatch) reuse() {
	clear(b.buf)
	b.buf = b.buf[:0]
}

// flushOutcomes ends a window (its timer, and Stop before the deregister):
// what waited goes out, and the next window opens when something did and
// the node is not draining.
func (s *Service) flushOutcomes() {
	draining := s.isDraining()
	b := &s.outcomes
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting.Store(false)
	if len(b.buf) == 0 || draining {
		b.open = false
		if b.timer != nil {
			b.timer.Stop()
		}
	} else {
		b.timer.Reset(b.window)
	}
	s.publishOutcomes(b.buf)
	b.reuse()
}

// publishOutcomes sends one outcome as a JSON object, several as a JSON
// array of them (record.DecodeOutcomes reads both).
func (s *Service) publishOutcomes(out []record.Outcome) {
	if len(out) == 0 {
		return
	}
	subj := s.cfg.Subjects.Outcome(s.cfg.NodeID)
	b, err := record.EncodeOutcomes(out)
	if err == nil {
		err = s.nc.Publish(subj, b)
	}
	if err != nil && !s.nc.IsClosed() {
		s.log.Warn().Err(err).Str(logging.KeyRequest, out[0].RequestID).Int("outcomes", len(out)).Str("subject", subj).Msg("publish outcome")
	}
}
