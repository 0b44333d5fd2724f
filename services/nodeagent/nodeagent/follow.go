package nodeagent

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// maxRecordWatchRetry caps the pause between attempts to open fed_catalog
// (a mesh whose catalog has not created it yet).
const maxRecordWatchRetry = 10 * time.Second

// followRecord runs on the loops group once the node is registered: it
// follows the node's own key in fed_catalog (nodes.<id>) and registers again
// as soon as the record is deleted or purged: the catalog expired it after
// the node hung past node_ttl, or an operator deleted it. Heartbeats alone
// would never bring it back (the catalog ignores heartbeats of nodes it has
// no record of). Until the bucket can be opened it retries, the pause
// doubling from RegisterRetry up to maxRecordWatchRetry.
func (s *Service) followRecord(ctx context.Context) {
	key := buckets.NodeKey(s.cfg.NodeID)
	pause := s.cfg.RegisterRetry
	for logged := false; ; {
		kv, err := s.catalogBucket(ctx)
		if err == nil {
			s.recordSeen.Store(false)
			err = buckets.FollowKeys(ctx, s.loops, kv, key, s.onRecord)
			if err == nil {
				if !s.recordSeen.Load() {
					// Gone between the register and the watch.
					s.reregister("catalog record missing")
				}
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !logged {
			logged = true
			s.log.Debug().Err(err).Str("bucket", buckets.Catalog).Msg("cannot follow the node's catalog record yet, retrying")
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		pause = min(2*pause, maxRecordWatchRetry)
	}
}

// catalogBucket opens fed_catalog (the catalog creates it; the node never
// does).
func (s *Service) catalogBucket(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
	defer cancel()
	return js.KeyValue(octx, buckets.Catalog)
}

// onRecord sees every change of the node's catalog key, in order. A record
// of another instance means the catalog gave the node id to it (this one
// was silent past takeover_silence: frozen, cut off): this one stands down
// and registers again, which waits until that one has been silent as long.
func (s *Service) onRecord(e jetstream.KeyValueEntry) {
	if !buckets.Deleted(e) {
		s.recordSeen.Store(true)
		n, err := record.DecodeNode(e.Key(), e.Value())
		if err != nil || n.InstanceID == "" || n.InstanceID == s.instance || s.isDraining() {
			return
		}
		s.standDown(n.InstanceID)
		s.reregister("node id taken over by instance " + n.InstanceID)
		return
	}
	if s.isDraining() {
		return // our own deregister, or on its way out: stay gone
	}
	s.log.Info().Str(logging.KeySubject, e.Key()).Str("op", e.Operation().String()).
		Msg("catalog record gone (expired or deleted): registering again")
	s.reregister("catalog record gone")
}
