// Package buckets creates and opens fedmesh's JetStream KV buckets and
// its blob store (DESIGN §5) and names their keys.
package buckets

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names.
const (
	Catalog = "fed_catalog"
	Health  = "fed_health"
	Config  = "fed_config"
	// Blobs is the JetStream Object Store of out-of-band bodies: request
	// bodies and answers too large for one NATS message (DESIGN §3.7,
	// shared/blobs).
	Blobs = "fed_blobs"
)

// DefaultBlobTTL is how long an object lives in fed_blobs when nobody
// deletes it: long enough for the longest request (wire.MaxTimeout is 1 h,
// but a body is read at its start and an answer right after its end), short
// enough that what a crashed client or node leaves goes soon.
const DefaultBlobTTL = 10 * time.Minute

// NodePrefix starts the key of every per-node record.
const NodePrefix = "nodes."

// StatsPrefix starts the keys of fed_health that hold the mesh-wide stats
// (health's counters, merged by every instance); readers of node records
// skip them.
const StatsPrefix = "stats."

// NodeKey is the key of a node's record in fed_catalog and fed_health.
func NodeKey(nodeID string) string { return NodePrefix + nodeID }

// NodeIDOfKey returns the node id of a nodes.<id> key, or "" for another key.
func NodeIDOfKey(key string) string {
	id, ok := strings.CutPrefix(key, NodePrefix)
	if !ok {
		return ""
	}
	return id
}

// Set is the three opened KV buckets and the blob store.
type Set struct {
	Catalog jetstream.KeyValue
	Health  jetstream.KeyValue
	Config  jetstream.KeyValue
	Blobs   jetstream.ObjectStore
}

// Options tune bucket creation.
type Options struct {
	// Replicas for clustered JetStream; 0 means 1. fed_blobs has as many
	// as the KV buckets.
	Replicas int
	// BlobTTL is fed_blobs' max age (an object not deleted by then
	// expires); 0 means DefaultBlobTTL. It applies when Ensure creates the
	// bucket; an existing bucket keeps its own.
	BlobTTL time.Duration
}

// Ensure creates the buckets when missing and opens them. Any service may
// call it at start: creation with an identical config is idempotent, so
// several instances starting at once do not race.
func Ensure(ctx context.Context, js jetstream.JetStream, opt Options) (*Set, error) {
	r := opt.Replicas
	if r <= 0 {
		r = 1
	}
	cfgs := []jetstream.KeyValueConfig{
		{Bucket: Catalog, Description: "fedmesh: which models run on which node", History: 1, Replicas: r},
		{Bucket: Health, Description: "fedmesh: per-node health, latency and circuit state", History: 1, Replicas: r},
		{Bucket: Config, Description: "fedmesh: router policy, regions, tenants", History: 5, Replicas: r},
	}
	var kvs [3]jetstream.KeyValue
	for i, c := range cfgs {
		kv, err := ensureOne(ctx, js, c)
		if err != nil {
			return nil, err
		}
		kvs[i] = kv
	}
	obs, err := ensureBlobs(ctx, js, BlobConfig(opt))
	if err != nil {
		return nil, err
	}
	return &Set{Catalog: kvs[0], Health: kvs[1], Config: kvs[2], Blobs: obs}, nil
}

// BlobConfig is the fed_blobs configuration Ensure creates: file storage,
// opt's replicas and TTL. No per-object limit exists in JetStream: the
// writers enforce the body cap (shared/blobs) before they upload.
func BlobConfig(opt Options) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{Bucket: Blobs,
		Description: "fedmesh: out-of-band request bodies and answers, deleted when their request ends",
		TTL:         cmp.Or(opt.BlobTTL, DefaultBlobTTL), Replicas: max(opt.Replicas, 1), Storage: jetstream.FileStorage}
}

func ensureBlobs(ctx context.Context, js jetstream.JetStream, c jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, c.Bucket)
	if err == nil {
		return obs, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", c.Bucket, err)
	}
	obs, err = js.CreateObjectStore(ctx, c)
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another instance created it between our lookup and create.
		return js.ObjectStore(ctx, c.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", c.Bucket, err)
	}
	return obs, nil
}

// EnsureConn is Ensure on nc's JetStream: what every service calls at start.
// While JetStream is not answering yet (a cluster electing its leaders, a
// server restarting) it tries again until ctx ends, so a service started
// with its servers waits for them instead of exiting.
func EnsureConn(ctx context.Context, nc *nats.Conn, opt Options) (*Set, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var set *Set
	err = retryTransient(ctx, func() error {
		var err error
		set, err = Ensure(ctx, js, opt)
		return err
	})
	return set, err
}

// Back-off of retryTransient.
const (
	retryFirst = 250 * time.Millisecond
	retryMax   = 2 * time.Second
)

// retryTransient runs op until it succeeds, fails for good, or ctx ends.
func retryTransient(ctx context.Context, op func() error) error {
	wait := retryFirst
	for {
		err := op()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// transient: JetStream did not answer in time, or nobody answers its API
// yet. Anything else (a bucket with another config, a permission) is final.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

func ensureOne(ctx context.Context, js jetstream.JetStream, c jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, c.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", c.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, c)
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another instance created it between our lookup and create.
		return js.KeyValue(ctx, c.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", c.Bucket, err)
	}
	return kv, nil
}

// Open opens the buckets, waiting up to wait for another service to create
// them; it never creates them itself. Readers such as routers use it.
func Open(ctx context.Context, js jetstream.JetStream, wait time.Duration) (*Set, error) {
	deadline := time.Now().Add(wait)
	for {
		s, err := openAll(ctx, js)
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) || !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func openAll(ctx context.Context, js jetstream.JetStream) (*Set, error) {
	var s Set
	for _, b := range []struct {
		name string
		dst  *jetstream.KeyValue
	}{{Catalog, &s.Catalog}, {Health, &s.Health}, {Config, &s.Config}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", b.name, err)
		}
		*b.dst = kv
	}
	obs, err := js.ObjectStore(ctx, Blobs)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Blobs, err)
	}
	s.Blobs = obs
	return &s, nil
}
