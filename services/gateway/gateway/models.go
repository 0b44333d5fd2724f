package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

type modelObject struct {
	ID           string   `json:"id"`
	Object       string   `json:"object"`
	Created      int64    `json:"created"`
	OwnedBy      string   `json:"owned_by"`
	Capabilities []string `json:"capabilities"`
	Nodes        []string `json:"nodes"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

// models answers GET /v1/models from the catalog (fed.catalog.list): one
// entry per model id, with the union of its capabilities and nodes.
func (s *Service) models(w http.ResponseWriter, r *http.Request, c caller) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CatalogTimeout)
	defer cancel()
	list, err := s.catalogList(ctx)
	if err != nil {
		s.fail(w, c, c.request(), "", err)
		return
	}
	writeJSON(w, http.StatusOK, catalogModels(list))
	s.done(observation{endpoint: c.endpoint, tenant: c.tenant.ID, status: http.StatusOK, elapsed: time.Since(c.start)},
		c.requestID, nil)
}

func (s *Service) catalogList(ctx context.Context) (*api.ListResponse, error) {
	m, err := s.nc.RequestWithContext(ctx, s.cfg.Subjects.CatalogList(), nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, wire.Errorf(wire.CodeNoCapacity, "no catalog service is answering %s", s.cfg.Subjects.CatalogList())
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return nil, wire.Errorf(wire.CodeTimeout, "catalog did not answer %s in time", s.cfg.Subjects.CatalogList())
	case err != nil:
		return nil, err
	}
	if we := wire.ErrorFromHeader(m.Header); we != nil {
		return nil, we
	}
	var list api.ListResponse
	if err := json.Unmarshal(m.Data, &list); err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "catalog answered invalid JSON: %v", err)
	}
	return &list, nil
}

func catalogModels(list *api.ListResponse) modelList {
	byID := map[string]*modelObject{}
	for _, n := range list.Nodes {
		for _, m := range n.Models {
			mo := byID[m.ModelID]
			if mo == nil {
				mo = &modelObject{ID: m.ModelID, Object: "model", OwnedBy: "fedmesh", Created: n.RegisteredAt.Unix(),
					Capabilities: []string{}, Nodes: []string{}}
				if n.RegisteredAt.IsZero() {
					mo.Created = 0
				}
				byID[m.ModelID] = mo
			}
			for _, cp := range m.Capabilities {
				if !slices.Contains(mo.Capabilities, cp) {
					mo.Capabilities = append(mo.Capabilities, cp)
				}
			}
			if !slices.Contains(mo.Nodes, n.NodeID) {
				mo.Nodes = append(mo.Nodes, n.NodeID)
			}
		}
	}
	out := modelList{Object: "list", Data: []modelObject{}}
	for _, mo := range byID {
		sort.Strings(mo.Capabilities)
		sort.Strings(mo.Nodes)
		out.Data = append(out.Data, *mo)
	}
	sort.Slice(out.Data, func(i, j int) bool { return out.Data[i].ID < out.Data[j].ID })
	return out
}
