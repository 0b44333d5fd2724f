package buckets_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

func TestEnsureIsIdempotentUnderRace(t *testing.T) {
	s := natsembed.StartForTest(t)
	js, err := jetstream.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ { // four services starting at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := buckets.Ensure(ctx, js, buckets.Options{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	set, err := buckets.Ensure(ctx, js, buckets.Options{})
	require.NoError(t, err)
	_, err = set.Catalog.Put(ctx, buckets.NodeKey("n1"), []byte(`{}`))
	require.NoError(t, err)
	for _, name := range []string{buckets.Catalog, buckets.Health, buckets.Config} {
		_, err := js.KeyValue(ctx, name)
		assert.NoError(t, err, name)
	}
	require.NotNil(t, set.Blobs)
	st, err := set.Blobs.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, buckets.Blobs, st.Bucket())
	assert.Equal(t, buckets.DefaultBlobTTL, st.TTL(), "blobs expire when nobody deletes them")
	assert.Equal(t, 1, st.Replicas())
}

func TestBlobConfig(t *testing.T) {
	c := buckets.BlobConfig(buckets.Options{})
	assert.Equal(t, buckets.DefaultBlobTTL, c.TTL)
	assert.Equal(t, 1, c.Replicas)
	c = buckets.BlobConfig(buckets.Options{Replicas: 3, BlobTTL: time.Minute})
	assert.Equal(t, time.Minute, c.TTL)
	assert.Equal(t, 3, c.Replicas, "replicated like the KV buckets")
	assert.Equal(t, jetstream.FileStorage, c.Storage)
}

func TestOpenWaitsForCreator(t *testing.T) {
	s := natsembed.StartForTest(t)
	js, err := jetstream.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	ctx := context.Background()
	_, err = buckets.Open(ctx, js, 50*time.Millisecond)
	require.ErrorIs(t, err, jetstream.ErrBucketNotFound, "Open never creates")
	go func() {
		time.Sleep(150 * time.Millisecond)
		_, _ = buckets.Ensure(ctx, js, buckets.Options{})
	}()
	set, err := buckets.Open(ctx, js, 5*time.Second)
	require.NoError(t, err)
	assert.NotNil(t, set.Config)
	assert.NotNil(t, set.Blobs)
}

func TestNodeKey(t *testing.T) {
	assert.Equal(t, "nodes.gpu-1", buckets.NodeKey("gpu-1"))
	assert.Equal(t, "gpu-1", buckets.NodeIDOfKey("nodes.gpu-1"))
	assert.Equal(t, "", buckets.NodeIDOfKey("router.policy"))
}

func TestFollowKeysSeesOnlyItsKey(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	set := natsembed.BucketsForTest(t, nc)
	ctx := context.Background()
	_, err := set.Catalog.Put(ctx, buckets.NodeKey("a"), []byte("1"))
	require.NoError(t, err)
	_, err = set.Catalog.Put(ctx, buckets.NodeKey("b"), []byte("1"))
	require.NoError(t, err)
	g := lifecycle.NewGroup()
	defer g.Stop()
	var mu sync.Mutex
	var seen []string
	require.NoError(t, buckets.FollowKeys(ctx, g, set.Catalog, buckets.NodeKey("a"), func(e jetstream.KeyValueEntry) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, e.Key()+":"+e.Operation().String())
	}))
	require.NoError(t, set.Catalog.Delete(ctx, buckets.NodeKey("a")))
	require.NoError(t, set.Catalog.Delete(ctx, buckets.NodeKey("b")))
	natsembed.Eventually(t, 0, func() error {
		mu.Lock()
		defer mu.Unlock()
		return natsembed.Check(len(seen) == 2, "seen %v", seen)
	})
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"nodes.a:KeyValuePutOp", "nodes.a:KeyValueDeleteOp"}, seen)
}

func TestRetryTransient(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		errs  []error // what op returns, call by call
		calls int
		fails bool
	}{
		{"ok at once", []error{nil}, 1, false},
		{"timeouts, then ok", []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, nil}, 4, false},
		{"a final error is not retried", []error{jetstream.ErrBucketExists}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := buckets.RetryTransientForTest(ctx, func() error {
				e := tc.errs[calls]
				calls++
				return e
			})
			assert.Equal(t, tc.calls, calls)
			assert.Equal(t, tc.fails, err != nil)
		})
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := buckets.RetryTransientForTest(short, func() error { return nats.ErrTimeout })
	require.Error(t, err, "gives up when its ctx ends")
}
