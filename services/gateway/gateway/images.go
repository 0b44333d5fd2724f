package gateway

import (
	"net/http"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// images passes POST /v1/images/generations through: the node answers the
// OpenAI images JSON itself (wire/payloads.go).
func (s *Service) images(w http.ResponseWriter, r *http.Request, c caller) {
	s.passThrough(w, r, c, wire.CapImagegen, &modelRequest{}, func(x *exchange, resp *client.Response) {
		x.relayJSON(w, resp, "images output")
	})
}
