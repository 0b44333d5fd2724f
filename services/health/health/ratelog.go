package health

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// rateLog logs at most one line per interval and counts what it suppressed,
// so a node spamming malformed messages cannot flood the log.
type rateLog struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

func (r *rateLog) warn(l *zerolog.Logger, err error, subj string) {
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
