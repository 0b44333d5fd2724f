package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

func (s *Service) deregister(ctx context.Context, r api.DeregisterRequest) error {
	for range maxWriteAttempts {
		cur, err := s.readStored(ctx, r.NodeID)
		if err != nil {
			return err
		}
		if cur.rev == 0 {
			return wire.Errorf(wire.CodeNotFound, "node_id %q is not registered", r.NodeID)
		}
		if old := cur.node; r.InstanceID != "" && old != nil && old.InstanceID != r.InstanceID {
			return wire.Errorf(wire.CodeConflict, "instance_id %q does not own node_id %q (registered by %q)",
				r.InstanceID, r.NodeID, old.InstanceID)
		}
		err = s.kv.Delete(ctx, buckets.NodeKey(r.NodeID), jetstream.LastRevision(cur.rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete node %s: %w", r.NodeID, err)
		}
		s.live.forget(r.NodeID)
		s.cache.remove(r.NodeID, cur.rev)
		return nil
	}
	return wire.Errorf(wire.CodeConflict, "node_id %q changed concurrently, try again", r.NodeID)
}

func (s *Service) handleDeregister(ctx context.Context, req micro.Request) {
	r, err := decodeRequest(req.Data(), "deregister", func(r *api.DeregisterRequest) error {
		return wire.ValidateID("node_id", r.NodeID)
	})
	if pre := s.cfg.Subjects.CatalogDeregister() + "."; err == nil && strings.HasPrefix(req.Subject(), pre) &&
		req.Subject()[len(pre):] != r.NodeID {
		// the bound form: only the node the subject names (its credential's)
		err = wire.Errorf(wire.CodePrivacy, "deregister subject names node %s, the body %s", req.Subject()[len(pre):], r.NodeID)
	}
	if err != nil {
		s.respondErr(req, err)
		return
	}
	if err := s.deregister(ctx, r); err != nil {
		s.respondErr(req, err)
		return
	}
	s.log.Info().Str(logging.KeyNode, r.NodeID).Str(logging.KeyNodeInstance, r.InstanceID).Msg("node deregistered")
	_ = req.RespondJSON(struct {
		NodeID string `json:"node_id"`
	}{r.NodeID})
}
