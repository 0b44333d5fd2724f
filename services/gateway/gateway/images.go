package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/fedmesh/fedmesh/shared/wire"
)

type imagesRequest struct {
	Model string `json:"model"`
}

// images passes POST /v1/images/generations through: the node answers the
// OpenAI images JSON itself (wire/payloads.go).
func (s *Service) images(w http.ResponseWriter, r *http.Request, c caller) {
	var ir imagesRequest
	body := s.readJSON(w, r, c, &ir)
	if body == nil {
		return
	}
	x, resp := s.whole(w, r, c, ir.Model, wire.CapImagegen, body)
	if resp == nil {
		return
	}
	defer x.cancel()
	if !json.Valid(resp.Body) {
		s.fail(w, c, x.req, resp.Node, &wire.Error{Code: wire.CodeInternal, RequestID: x.req.RequestID, Node: resp.Node,
			Description: "node answered images output that is not JSON"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp.Body)
	x.ok(http.StatusOK, resp.Node, resp.Tokens)
}
