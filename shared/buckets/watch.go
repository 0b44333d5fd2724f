package buckets

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/lifecycle"
)

// Follow is the one way a service mirrors a bucket: it watches every key of
// kv, hands the current values to apply, then every later change, on a
// goroutine owned by g until g stops. It returns once the current values
// are applied, or with an error when startCtx ends first. apply runs on one
// goroutine, in revision order.
func Follow(startCtx context.Context, g *lifecycle.Group, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	return FollowKeys(startCtx, g, kv, ">", apply, opts...)
}

// FollowKeys is Follow for the keys matching keys (a key, or a pattern
// with * and >), e.g. one node's own record.
func FollowKeys(startCtx context.Context, g *lifecycle.Group, kv jetstream.KeyValue, keys string, apply func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	var w jetstream.KeyWatcher
	err := retryTransient(startCtx, func() error {
		var err error
		w, err = kv.Watch(g.Context(), keys, opts...)
		return err
	})
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	ready := make(chan struct{})
	if !g.Go(func(ctx context.Context) {
		defer func() { _ = w.Stop() }()
		follow(ctx, w, apply, ready)
	}) {
		_ = w.Stop()
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), lifecycle.ErrStopped)
	}
	select {
	case <-ready:
		return nil
	case <-startCtx.Done():
		return fmt.Errorf("loading bucket %s: %w", kv.Bucket(), startCtx.Err())
	}
}

// Load hands the current values of kv to apply and returns; it keeps no watch.
func Load(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), opts ...jetstream.WatchOpt) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var w jetstream.KeyWatcher
	err := retryTransient(ctx, func() error {
		var err error
		w, err = kv.WatchAll(wctx, opts...)
		return err
	})
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("loading bucket %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("loading bucket %s: %w", kv.Bucket(), errWatchClosed)
			}
			if e == nil {
				return nil
			}
			apply(e)
		}
	}
}

var errWatchClosed = errors.New("watcher closed")

// follow applies updates until ctx ends or the watcher closes; it closes
// ready at the marker (nil entry) that ends the current values.
func follow(ctx context.Context, w jetstream.KeyWatcher, apply func(jetstream.KeyValueEntry), ready chan<- struct{}) {
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if initial {
					initial = false
					close(ready)
				}
				continue
			}
			apply(e)
		}
	}
}

// Deleted reports whether e records a delete or purge of its key.
func Deleted(e jetstream.KeyValueEntry) bool {
	op := e.Operation()
	return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
}
