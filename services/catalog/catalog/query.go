package catalog

import (
	"fmt"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/micro"
)

// Queries answer from the watch cache without I/O, so they run inline in the
// micro callback.

func (s *Service) handleFind(req micro.Request) {
	r, err := decodeRequest(req.Data(), "find", checkFind)
	if err != nil {
		s.respondErr(req, err)
		return
	}
	_ = req.RespondJSON(find(s.cache.snapshot(), r))
}

func checkFind(r *api.FindRequest) error {
	if err := wire.ValidateCapability(r.Capability); err != nil {
		return fmt.Errorf("capability: %w", err)
	}
	if r.Model != "" {
		return wire.ValidateID("model", r.Model)
	}
	return nil
}

func find(nodes []cached, r api.FindRequest) api.FindResponse {
	resp := api.FindResponse{Endpoints: []api.Endpoint{}}
	for _, c := range nodes {
		for _, m := range c.node.Models {
			if (r.Model == "" || m.ModelID == r.Model) && m.Serves(r.Capability) {
				resp.Endpoints = append(resp.Endpoints, api.Endpoint{
					NodeID: c.node.NodeID, Region: c.node.Region, Subject: c.node.Subject, ModelID: m.ModelID,
				})
			}
		}
	}
	return resp
}

func (s *Service) handleList(req micro.Request) {
	snap := s.cache.snapshot()
	resp := api.ListResponse{Nodes: make([]record.Node, 0, len(snap))}
	for _, c := range snap {
		resp.Nodes = append(resp.Nodes, c.node)
	}
	_ = req.RespondJSON(resp)
}

func (s *Service) handleGet(req micro.Request) {
	r, err := decodeRequest(req.Data(), "get", func(r *api.GetRequest) error {
		return wire.ValidateID("model_id", r.ModelID)
	})
	if err != nil {
		s.respondErr(req, err)
		return
	}
	resp, ok := getModel(s.cache.snapshot(), r.ModelID)
	if !ok {
		s.respondErr(req, wire.Errorf(wire.CodeNotFound, "model_id %q is not served by any registered node", r.ModelID))
		return
	}
	_ = req.RespondJSON(resp)
}

// getModel returns the model's metadata as the first node (by id) declares
// it, and every node running it.
func getModel(nodes []cached, modelID string) (api.GetResponse, bool) {
	var resp api.GetResponse
	found := false
	for _, c := range nodes {
		for _, m := range c.node.Models {
			if m.ModelID != modelID {
				continue
			}
			if !found {
				resp.Model = m
				found = true
			}
			resp.Nodes = append(resp.Nodes, c.node.NodeID)
			break
		}
	}
	return resp, found
}
