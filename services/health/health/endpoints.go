package health

import (
	"encoding/json"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/micro"
)

// Micro handlers. They answer from memory under mu (no I/O), so they run
// in the subscription callback without serialising anything slow.

func (s *Service) handleGet(req micro.Request) {
	var body api.HealthGetRequest
	if err := json.Unmarshal(req.Data(), &body); err != nil {
		s.replyErr(req, wire.Errorf(wire.CodeBadRequest, "body: want {\"node_id\": \"...\"}: %v", err))
		return
	}
	if err := wire.ValidateID("node_id", body.NodeID); err != nil {
		s.replyErr(req, wire.Errorf(wire.CodeBadRequest, "%v", err))
		return
	}
	s.mu.Lock()
	n := s.nodes[body.NodeID]
	var r record.Health
	if n != nil {
		r = n.record()
	}
	s.mu.Unlock()
	if n == nil {
		s.replyErr(req, wire.Errorf(wire.CodeNotFound, "node_id %q: unknown node", body.NodeID))
		return
	}
	s.replyJSON(req, r)
}

func (s *Service) handleList(req micro.Request) {
	s.mu.Lock()
	out := api.HealthListResponse{Nodes: make([]record.Health, 0, len(s.nodes))}
	for _, id := range sortedIDs(s.nodes) {
		out.Nodes = append(out.Nodes, s.nodes[id].record())
	}
	s.mu.Unlock()
	s.replyJSON(req, out)
}

func (s *Service) handleStats(req micro.Request) {
	s.mu.Lock()
	s.updateMeshState()
	st := s.stats()
	s.mu.Unlock()
	s.replyJSON(req, st)
}

func (s *Service) replyJSON(req micro.Request, v any) {
	if err := req.RespondJSON(v); err != nil {
		s.log.Warn().Err(err).Str(logging.KeySubject, req.Subject()).Msg("reply failed")
	}
}

func (s *Service) replyErr(req micro.Request, err error) {
	if rerr := wire.RespondError(s.nc, req.Reply(), err); rerr != nil {
		s.log.Warn().Err(rerr).Str(logging.KeySubject, req.Subject()).Msg("reply failed")
	}
}
