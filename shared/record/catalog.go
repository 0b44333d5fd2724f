// Package record holds the JSON documents fedmesh keeps in its KV buckets and
// publishes as events (DESIGN §5). Field names are wire format: snake_case,
// readable with `nats kv get`.
package record

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Model is one model a node serves.
type Model struct {
	ModelID      string   `json:"model_id"`
	Name         string   `json:"name,omitempty"`
	Version      string   `json:"version,omitempty"`
	Capabilities []string `json:"capabilities"`
	Parameters   string   `json:"parameters,omitempty"` // e.g. "7B"
	Quantization string   `json:"quantization,omitempty"`
}

// Serves reports whether m has capability c.
func (m *Model) Serves(c string) bool {
	for _, x := range m.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

// Node is a fed_catalog value, key nodes.<node_id>.
type Node struct {
	NodeID         string            `json:"node_id"`
	Region         string            `json:"region"`
	Zone           string            `json:"zone,omitempty"`
	Subject        string            `json:"subject"`
	Models         []Model           `json:"models"`
	GPU            bool              `json:"gpu"`
	Cost           float64           `json:"cost"` // relative, [0,1]
	Clearance      wire.Privacy      `json:"clearance"`
	MaxConcurrency int               `json:"max_concurrency"`
	Labels         map[string]string `json:"labels,omitempty"`
	AgentVersion   string            `json:"agent_version,omitempty"`
	// Resumable: the node's backend gives the same output for the same
	// request as every other resumable node of that model (the synthetic
	// backend does), so a stream cut by a lost node can continue on it at
	// the next Fed-Seq.
	Resumable bool `json:"resumable,omitempty"`
	// Continues: the node's backend can continue an answer from its text
	// so far (Fed-Continue-Seq, DESIGN §4 step 9): an OpenAI-compatible
	// server with continue_final_message, the synthetic backend.
	Continues bool `json:"continues,omitempty"`
	// InstanceID tells two agents claiming one node id apart (409 on conflict).
	InstanceID   string    `json:"instance_id,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
}

// Serves reports whether the node runs model (any model when "") with capability c.
func (n *Node) Serves(c, model string) bool {
	for i := range n.Models {
		if (model == "" || n.Models[i].ModelID == model) && n.Models[i].Serves(c) {
			return true
		}
	}
	return false
}
