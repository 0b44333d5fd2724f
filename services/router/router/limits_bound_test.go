package router

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/fedmesh/fedmesh/shared/record"
)

// Made-up tenant names under "*" cost bounded memory: idle tenants' full
// buckets are forgotten, and past the bound unknown names share one bucket.
func TestTenantBucketsBounded(t *testing.T) {
	l := newTenantLimits()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	l.configure(record.Tenants{DefaultTenant: {RequestsPerSecond: 1, Burst: 1}})
	for i := range maxTenantBuckets + 500 {
		l.allow("t" + strconv.Itoa(i))
	}
	assert.LessOrEqual(t, len(l.buckets), maxTenantBuckets+1, "bounded, the overflow bucket included")
	assert.False(t, l.allow("another-new-one"), "past the bound, new names share the (spent) overflow bucket")
	now = now.Add(10 * time.Second) // everyone refills: idle buckets are forgotten
	assert.True(t, l.allow("fresh"))
	assert.LessOrEqual(t, len(l.buckets), 2)
}
