package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// defaultCost is a node's relative cost when it declares none (DESIGN §6).
const defaultCost = 0.5

// maxInstanceIDLen bounds instance_id; it is opaque but lands in logs and KV.
const maxInstanceIDLen = 256

// registerBody shadows the fields of record.Node that need a tri-state or a
// field-named error: the outer fields win over the embedded ones in
// encoding/json, so the clearance and cost errors can name their field.
type registerBody struct {
	record.Node
	Clearance *string  `json:"clearance"`
	Cost      *float64 `json:"cost"`
}

// decodeRegister parses and validates a register body. Every error is a
// *wire.Error with code 400 whose description names the offending field.
// It fills subject and registered_at.
func decodeRegister(data []byte, sp subjectSpace, now time.Time) (record.Node, error) {
	var b registerBody
	if err := json.Unmarshal(data, &b); err != nil {
		return record.Node{}, wire.Errorf(wire.CodeBadRequest, "malformed register body: %v", err)
	}
	n := b.Node
	n.Clearance = wire.DefaultPrivacy
	if b.Clearance != nil {
		p, err := wire.ParsePrivacy(*b.Clearance)
		if err != nil {
			return record.Node{}, wire.Errorf(wire.CodeBadRequest, "clearance: %v", err)
		}
		n.Clearance = p
	}
	n.Cost = defaultCost
	if b.Cost != nil {
		n.Cost = *b.Cost
	}
	if err := validateNode(&n); err != nil {
		return record.Node{}, err
	}
	n.Subject = sp.NodeInfer(n.NodeID)
	n.RegisteredAt = now.UTC()
	return n, nil
}

// subjectSpace is the part of subject.Space the decoder needs (keeps the fuzz
// target independent of a running service).
type subjectSpace interface{ NodeInfer(string) string }

func validateNode(n *record.Node) error {
	bad := func(format string, args ...any) error {
		return wire.Errorf(wire.CodeBadRequest, format, args...)
	}
	if err := wire.ValidateID("node_id", n.NodeID); err != nil {
		return bad("%v", err)
	}
	if err := wire.ValidateID("region", n.Region); err != nil {
		return bad("%v", err)
	}
	if n.Zone != "" {
		if err := wire.ValidateID("zone", n.Zone); err != nil {
			return bad("%v", err)
		}
	}
	if len(n.InstanceID) > maxInstanceIDLen {
		return bad("instance_id is longer than %d characters", maxInstanceIDLen)
	}
	if !(n.Cost >= 0 && n.Cost <= 1) {
		return bad("cost %v is outside [0,1]", n.Cost)
	}
	if n.MaxConcurrency < 1 {
		return bad("max_concurrency %d must be >= 1", n.MaxConcurrency)
	}
	if len(n.Models) == 0 {
		return bad("models: a node must serve at least one model")
	}
	seen := make(map[string]bool, len(n.Models))
	for i := range n.Models {
		m := &n.Models[i]
		field := fmt.Sprintf("models[%d].model_id", i)
		if err := wire.ValidateID(field, m.ModelID); err != nil {
			return bad("%v", err)
		}
		if seen[m.ModelID] {
			return bad("%s %q is listed twice", field, m.ModelID)
		}
		seen[m.ModelID] = true
		if len(m.Capabilities) == 0 {
			return bad("models[%d].capabilities: model %q needs at least one capability", i, m.ModelID)
		}
		for j, c := range m.Capabilities {
			if err := wire.ValidateCapability(c); err != nil {
				return bad("models[%d].capabilities[%d]: %v", i, j, err)
			}
		}
	}
	return nil
}

// maxWriteAttempts bounds the retries of a revision-checked write that lost a race.
const maxWriteAttempts = 5

// register writes n into fed_catalog. A same-instance (or dead-instance)
// record is replaced; another live instance's is refused with 409.
func (s *Service) register(ctx context.Context, n record.Node) (api.RegisterResponse, error) {
	key := buckets.NodeKey(n.NodeID)
	data, err := json.Marshal(n)
	if err != nil {
		return api.RegisterResponse{}, fmt.Errorf("encode node %s: %w", n.NodeID, err)
	}
	for range maxWriteAttempts {
		entry, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			// Create also succeeds over a delete marker.
			rev, err := s.kv.Create(ctx, key, data)
			if err != nil {
				if errors.Is(err, jetstream.ErrKeyExists) {
					continue // another instance registered it first: judge that one
				}
				return api.RegisterResponse{}, fmt.Errorf("create node %s: %w", n.NodeID, err)
			}
			s.cache.put(n, rev)
			return api.RegisterResponse{NodeID: n.NodeID, Subject: n.Subject}, nil
		}
		if err != nil {
			return api.RegisterResponse{}, fmt.Errorf("read node %s: %w", n.NodeID, err)
		}
		var old record.Node
		if json.Unmarshal(entry.Value(), &old) == nil && old.InstanceID != n.InstanceID && s.alive(old, time.Now()) {
			return api.RegisterResponse{}, wire.Errorf(wire.CodeConflict,
				"node_id %q is registered by another live instance (%q); it expires %s after its last heartbeat",
				n.NodeID, old.InstanceID, s.cfg.NodeTTL)
		}
		rev, err := s.kv.Update(ctx, key, data, entry.Revision())
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
			return api.RegisterResponse{}, fmt.Errorf("update node %s: %w", n.NodeID, err)
		}
		s.cache.put(n, rev)
		return api.RegisterResponse{NodeID: n.NodeID, Subject: n.Subject, Replaced: true}, nil
	}
	return api.RegisterResponse{}, wire.Errorf(wire.CodeConflict, "node_id %q: concurrent registrations, try again", n.NodeID)
}

func (s *Service) handleRegister(ctx context.Context, req micro.Request) {
	n, err := decodeRegister(req.Data(), s.cfg.Subjects, time.Now())
	if err != nil {
		s.respondErr(req, err)
		return
	}
	resp, err := s.register(ctx, n)
	if err != nil {
		s.respondErr(req, err)
		return
	}
	s.log.Info().Str("node", n.NodeID).Str("instance", n.InstanceID).Str("region", n.Region).
		Int("models", len(n.Models)).Bool("replaced", resp.Replaced).Msg("node registered")
	_ = req.RespondJSON(resp)
}
