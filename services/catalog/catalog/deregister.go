package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

func (s *Service) deregister(ctx context.Context, r api.DeregisterRequest) error {
	key := buckets.NodeKey(r.NodeID)
	for range maxWriteAttempts {
		entry, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return wire.Errorf(wire.CodeNotFound, "node_id %q is not registered", r.NodeID)
		}
		if err != nil {
			return fmt.Errorf("read node %s: %w", r.NodeID, err)
		}
		if r.InstanceID != "" {
			var old record.Node
			if json.Unmarshal(entry.Value(), &old) == nil && old.InstanceID != r.InstanceID {
				return wire.Errorf(wire.CodeConflict, "instance_id %q does not own node_id %q (registered by %q)",
					r.InstanceID, r.NodeID, old.InstanceID)
			}
		}
		err = s.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete node %s: %w", r.NodeID, err)
		}
		s.live.forget(r.NodeID)
		s.cache.remove(r.NodeID, entry.Revision())
		return nil
	}
	return wire.Errorf(wire.CodeConflict, "node_id %q changed concurrently, try again", r.NodeID)
}

func (s *Service) handleDeregister(ctx context.Context, req micro.Request) {
	var r api.DeregisterRequest
	if err := json.Unmarshal(req.Data(), &r); err != nil {
		s.respondErr(req, wire.Errorf(wire.CodeBadRequest, "malformed deregister body: %v", err))
		return
	}
	if err := wire.ValidateID("node_id", r.NodeID); err != nil {
		s.respondErr(req, wire.Errorf(wire.CodeBadRequest, "%v", err))
		return
	}
	if err := s.deregister(ctx, r); err != nil {
		s.respondErr(req, err)
		return
	}
	s.log.Info().Str("node", r.NodeID).Str("instance", r.InstanceID).Msg("node deregistered")
	_ = req.RespondJSON(struct {
		NodeID string `json:"node_id"`
	}{r.NodeID})
}
