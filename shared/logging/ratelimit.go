package logging

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Limited logs at most one line per interval and counts what it suppressed,
// so a peer spamming malformed messages cannot flood the log.
type Limited struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// NewLimited returns a Limited that lets one line through per every.
func NewLimited(every time.Duration) *Limited { return &Limited{every: every} }

// DroppedMessage logs, rate-limited, that a message on subj was dropped
// because of err.
func (r *Limited) DroppedMessage(l *zerolog.Logger, err error, subj string) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.suppressed = 0
	r.last = now
	r.mu.Unlock()
	l.Warn().Err(err).Str("subject", subj).Int("suppressed", n).Msg("dropping malformed message")
}
