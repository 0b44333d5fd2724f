package simserver

import (
	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// backendCall is a node agent's call of a streamed generate request that
// continues text another node began.
func backendCall(body, soFar string) backend.Call {
	c := backend.Call{RequestID: "r1", Capability: wire.CapGenerate, Model: "m1", Body: []byte(body), Stream: true}
	if soFar != "" {
		c.Continue = &backend.Continuation{Seq: 1, Text: []byte(soFar)}
	}
	return c
}
