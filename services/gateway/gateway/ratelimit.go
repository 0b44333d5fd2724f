package gateway

import (
	"math"
	"sync"
	"sync/atomic"
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

// slots caps the requests each tenant has in flight, over all its keys. The
// map is built once from the configured keys and never grows: its memory is
// bounded by the keys file, whatever callers send.
type slots struct {
	tenants map[string]*tenantSlots
}

type tenantSlots struct {
	limit int64
	used  atomic.Int64
}

func newSlots(cfg Config) *slots {
	s := &slots{tenants: map[string]*tenantSlots{}}
	for _, t := range cfg.Keys {
		if s.tenants[t.ID] == nil {
			s.tenants[t.ID] = &tenantSlots{limit: int64(cfg.maxConcurrent(t))} // Validate: the same for all its keys
		}
	}
	return s
}

// acquire takes one of tenant's slots; false when all limit are taken. A
// taken slot is given back with release.
func (s *slots) acquire(tenant string) (limit int64, ok bool) {
	ts := s.tenants[tenant]
	if ts == nil {
		return 0, true // not a configured tenant: authed never asks
	}
	if ts.used.Add(1) > ts.limit {
		ts.used.Add(-1)
		return ts.limit, false
	}
	return ts.limit, true
}

func (s *slots) release(tenant string) {
	if ts := s.tenants[tenant]; ts != nil {
		ts.used.Add(-1)
	}
}
