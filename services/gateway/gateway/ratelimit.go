package gateway

import (
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per tenant. A tenant's keys share one bucket, so
// handing out more keys does not raise its limit.
type limiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter() *limiter {
	return &limiter{buckets: map[string]*bucket{}, now: time.Now}
}

// allow takes one token of t's bucket. It returns false and how long until
// the next token when the bucket is empty.
func (l *limiter) allow(t Tenant) (bool, time.Duration) {
	if t.RequestsPerSecond <= 0 {
		return true, 0
	}
	burst := float64(t.Burst)
	if burst <= 0 {
		burst = math.Max(1, math.Ceil(t.RequestsPerSecond))
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[t.ID]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		l.buckets[t.ID] = b
	}
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.last).Seconds()*t.RequestsPerSecond)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / t.RequestsPerSecond * float64(time.Second))
	return false, wait
}
