package catalog

import (
	"context"
	"errors"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/nats-io/nats.go/jetstream"
)

// sweep removes the records of nodes that stopped heartbeating, whether or
// not they said goodbye (DESIGN §5 node_ttl); it runs every SweepInterval.
func (s *Service) sweep(ctx context.Context, now time.Time) {
	for _, c := range s.cache.snapshot() {
		last := s.lastSign(c.node)
		if now.Sub(last) < s.cfg.NodeTTL {
			continue
		}
		// Revision-checked: a node that re-registered meanwhile keeps its record,
		// and of two catalog instances sweeping at once only one delete lands.
		err := s.kv.Delete(ctx, buckets.NodeKey(c.node.NodeID), jetstream.LastRevision(c.rev))
		switch {
		case err == nil:
			s.live.forget(c.node.NodeID)
			s.cache.remove(c.node.NodeID, c.rev)
			s.log.Info().Str(logging.KeyNode, c.node.NodeID).Str(logging.KeyNodeInstance, c.node.InstanceID).
				Time("last_seen", last).Dur("node_ttl", s.cfg.NodeTTL).Msg("node expired")
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), ctx.Err() != nil:
		default:
			s.log.Warn().Err(err).Str(logging.KeyNode, c.node.NodeID).Msg("expire node")
		}
	}
	s.live.prune(now.Add(-2 * s.cfg.NodeTTL))
}
