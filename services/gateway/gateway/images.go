package gateway

import (
	"net/http"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// images passes POST /v1/images/generations through: the node answers the
// OpenAI images JSON itself (wire/payloads.go), passed on as it is read.
func (s *Service) images(w http.ResponseWriter, r *http.Request, c caller) {
	x := s.receiveJSON(w, r, c, wire.CapImagegen, &modelRequest{})
	if x == nil {
		return
	}
	defer x.cancel()
	x.relayJSONAnswer(w, "images output") // a large b64_json answer streams, never held

}
