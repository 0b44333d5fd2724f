package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// defaultCost is a node's relative cost when it declares none (DESIGN §6).
const defaultCost = 0.5

// registerBody shadows the fields of record.Node that need a tri-state or a
// field-named error: the outer fields win over the embedded ones in
// encoding/json, so the clearance and cost errors can name their field.
type registerBody struct {
	record.Node
	Clearance *string  `json:"clearance"`
	Cost      *float64 `json:"cost"`
}

// resolve fills the embedded record's clearance and cost (given or default)
// and validates it; errors name the offending field.
func (b *registerBody) resolve() error {
	b.Node.Clearance = wire.DefaultPrivacy
	if b.Clearance != nil {
		p, err := wire.ParsePrivacy(*b.Clearance)
		if err != nil {
			return fmt.Errorf("clearance: %w", err)
		}
		b.Node.Clearance = p
	}
	b.Node.Cost = defaultCost
	if b.Cost != nil {
		b.Node.Cost = *b.Cost
	}
	return b.Node.Validate()
}

// decodeRegister parses and validates a register body. Every error is a
// *wire.Error with code 400 whose description names the offending field.
// It fills subject and registered_at.
func decodeRegister(data []byte, sp subjectSpace, now time.Time) (record.Node, error) {
	b, err := decodeRequest(data, "register", (*registerBody).resolve)
	if err != nil {
		return record.Node{}, err
	}
	n := b.Node
	n.Subject = sp.NodeInfer(n.NodeID)
	n.RegisteredAt = now.UTC()
	return n, nil
}

// boundRegister checks a register that came on the bound subject
// fed.catalog.register.<node>.<region>.<clearance>: the body must name that
// node and region, and may not claim a clearance above the subject's (in
// secured mode the node's credential allows only its own such subject).
func (s *Service) boundRegister(subj string, n *record.Node) error {
	pre := s.cfg.Subjects.CatalogRegister() + "."
	if !strings.HasPrefix(subj, pre) {
		return nil // the open form: the body alone
	}
	parts := strings.Split(subj[len(pre):], ".")
	if len(parts) != 3 {
		return wire.Errorf(wire.CodeBadRequest, "register subject %s: want %snode.region.clearance", subj, pre)
	}
	level, err := wire.ParsePrivacy(parts[2])
	if err != nil {
		return wire.Errorf(wire.CodeBadRequest, "register subject %s: %v", subj, err)
	}
	switch {
	case n.NodeID != parts[0]:
		return wire.Errorf(wire.CodePrivacy, "register subject names node %s, the body %s", parts[0], n.NodeID)
	case n.Region != parts[1]:
		return wire.Errorf(wire.CodePrivacy, "node %s: register subject names region %s, the body %s", n.NodeID, parts[1], n.Region)
	case n.Clearance > level:
		return wire.Errorf(wire.CodePrivacy, "node %s: clearance %s claimed, its register subject allows %s", n.NodeID, n.Clearance, level)
	}
	return nil
}

// subjectSpace is the part of subject.Space the decoder needs (keeps the fuzz
// target independent of a running service).
type subjectSpace interface{ NodeInfer(string) string }

// maxWriteAttempts bounds the retries of a revision-checked write that lost a race.
const maxWriteAttempts = 5

// storedNode is a node's record as fed_catalog holds it now.
type storedNode struct {
	rev  uint64       // revision of the value; 0 when the node has no record
	node *record.Node // nil when there is none or it does not decode
}

// readStored reads node id's current record for a revision-checked write.
// A value that does not decode keeps only its revision, so the write can
// still replace or delete it.
func (s *Service) readStored(ctx context.Context, id string) (storedNode, error) {
	entry, err := s.kv.Get(ctx, buckets.NodeKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return storedNode{}, nil
	}
	if err != nil {
		return storedNode{}, fmt.Errorf("read node %s: %w", id, err)
	}
	st := storedNode{rev: entry.Revision()}
	if n, err := record.DecodeNode(entry.Key(), entry.Value()); err == nil {
		st.node = &n
	}
	return st, nil
}

// register writes n into fed_catalog. A same-instance (or dead-instance)
// record is replaced; another live instance's is refused with 409.
func (s *Service) register(ctx context.Context, n record.Node) (api.RegisterResponse, error) {
	key := buckets.NodeKey(n.NodeID)
	data, err := json.Marshal(n)
	if err != nil {
		return api.RegisterResponse{}, fmt.Errorf("encode node %s: %w", n.NodeID, err)
	}
	for range maxWriteAttempts {
		cur, err := s.readStored(ctx, n.NodeID)
		if err != nil {
			return api.RegisterResponse{}, err
		}
		if cur.rev == 0 {
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
		if old := cur.node; old != nil && old.InstanceID != n.InstanceID && s.holds(*old, time.Now()) {
			return api.RegisterResponse{}, wire.Errorf(wire.CodeConflict,
				"node_id %q is registered by another live instance (%q); another may take it %s after its last heartbeat",
				n.NodeID, old.InstanceID, s.cfg.TakeoverSilence)
		}
		rev, err := s.kv.Update(ctx, key, data, cur.rev)
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
	if err == nil {
		err = s.boundRegister(req.Subject(), &n)
	}
	if err != nil {
		s.respondErr(req, err)
		return
	}
	resp, err := s.register(ctx, n)
	if err != nil {
		s.respondErr(req, err)
		return
	}
	s.log.Info().Str(logging.KeyNode, n.NodeID).Str(logging.KeyNodeInstance, n.InstanceID).Str("region", n.Region).
		Int("models", len(n.Models)).Bool("replaced", resp.Replaced).Msg("node registered")
	_ = req.RespondJSON(resp)
}
