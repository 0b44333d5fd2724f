package router

import (
	"math"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// DefaultTenant is the tenants entry that applies to every tenant not listed
// by name (and to requests without Fed-Tenant).
const DefaultTenant = "*"

// tokenBucket is one tenant's allowance: rate tokens per second up to burst.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// tenantLimits enforces fed_config key tenants. Each router instance keeps
// its own buckets: with N routers sharing a queue group the mesh-wide rate is
// up to N× the configured one (documented in the README).
type tenantLimits struct {
	mu      sync.Mutex
	cfg     record.Tenants
	buckets map[string]*tokenBucket
	now     func() time.Time
}

func newTenantLimits() *tenantLimits {
	return &tenantLimits{buckets: map[string]*tokenBucket{}, now: time.Now}
}

// configure replaces the limits; allowances start full again.
func (l *tenantLimits) configure(t record.Tenants) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = t
	l.buckets = map[string]*tokenBucket{}
}

// maxTenantBuckets bounds the buckets one router keeps (issue 13: every
// new tenant name used to add one that was never removed).
const maxTenantBuckets = 10000

// overflowTenant is the bucket unknown tenants share once the map is full.
const overflowTenant = "\x00overflow"

// forgetIdle drops the buckets that have refilled: an idle tenant's full
// bucket holds nothing a new one would not. l.mu is held.
func (l *tenantLimits) forgetIdle(now time.Time) {
	for name, b := range l.buckets {
		t, ok := l.cfg[name]
		if !ok {
			t = l.cfg[DefaultTenant]
		}
		burst := float64(t.Burst)
		if burst <= 0 {
			burst = math.Ceil(t.RequestsPerSecond)
		}
		if t.RequestsPerSecond <= 0 || b.tokens+now.Sub(b.last).Seconds()*t.RequestsPerSecond >= burst {
			delete(l.buckets, name)
		}
	}
}

// allow takes one token from tenant's bucket; false means over its limit.
func (l *tenantLimits) allow(tenant string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.cfg[tenant]
	if !ok {
		if t, ok = l.cfg[DefaultTenant]; !ok {
			return true
		}
	}
	if t.RequestsPerSecond <= 0 {
		return true
	}
	burst := float64(t.Burst)
	if burst <= 0 {
		burst = math.Ceil(t.RequestsPerSecond)
	}
	now := l.now()
	b := l.buckets[tenant]
	if b == nil {
		if len(l.buckets) >= maxTenantBuckets {
			l.forgetIdle(now)
		}
		if len(l.buckets) >= maxTenantBuckets {
			// still full of busy tenants: unknown names share one bucket,
			// so a flood of made-up tenants costs no memory
			tenant = overflowTenant
			if b = l.buckets[tenant]; b != nil {
				goto take
			}
		}
		b = &tokenBucket{tokens: burst, last: now}
		l.buckets[tenant] = b
	}
take:
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(burst, b.tokens+el*t.RequestsPerSecond)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
