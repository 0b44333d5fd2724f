// Package api holds the JSON requests and responses of fedmesh's micro
// endpoints (catalog, health, router). Errors travel as micro errors
// (Nats-Service-Error / Nats-Service-Error-Code headers), never in these bodies.
package api

import "github.com/fedmesh/fedmesh/shared/record"

// RegisterRequest is the body of fed.catalog.register: the node's record.
// The catalog fills subject and registered_at.
type RegisterRequest = record.Node

// RegisterResponse acknowledges a registration.
type RegisterResponse struct {
	NodeID   string `json:"node_id"`
	Subject  string `json:"subject"`
	Replaced bool   `json:"replaced"` // the node was registered before
}

// DeregisterRequest is the body of fed.catalog.deregister.
type DeregisterRequest struct {
	NodeID     string `json:"node_id"`
	InstanceID string `json:"instance_id,omitempty"`
}

// FindRequest is the body of fed.catalog.find.
type FindRequest struct {
	Capability string `json:"capability"`
	Model      string `json:"model,omitempty"`
}

// Endpoint is one place a capability is served.
type Endpoint struct {
	NodeID  string `json:"node_id"`
	Region  string `json:"region"`
	Subject string `json:"subject"`
	ModelID string `json:"model_id"`
}

// FindResponse answers fed.catalog.find.
type FindResponse struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// ListResponse answers fed.catalog.list.
type ListResponse struct {
	Nodes []record.Node `json:"nodes"`
}

// GetRequest is the body of fed.catalog.get.
type GetRequest struct {
	ModelID string `json:"model_id"`
}

// GetResponse answers fed.catalog.get: a model's metadata and where it runs.
type GetResponse struct {
	Model record.Model `json:"model"`
	Nodes []string     `json:"nodes"`
}

// HealthGetRequest is the body of fed.health.get.
type HealthGetRequest struct {
	NodeID string `json:"node_id"`
}

// HealthListResponse answers fed.health.list.
type HealthListResponse struct {
	Nodes []record.Health `json:"nodes"`
}

// Candidate is one node as the router judged it for fed.router.candidates.
type Candidate struct {
	NodeID     string             `json:"node_id"`
	Region     string             `json:"region"`
	ModelID    string             `json:"model_id"`
	Scores     map[string]float64 `json:"scores"` // policy → score in [0,1]
	Total      float64            `json:"total"`
	Eligible   bool               `json:"eligible"`
	RejectedBy string             `json:"rejected_by,omitempty"` // policy name
	Reason     string             `json:"reason,omitempty"`
	Chosen     bool               `json:"chosen,omitempty"` // what the strategy would pick now
	// PredictedTTFTMs is expected_ttft's expected time to first token on
	// this node, PrefixMatch the share of the request's prefix blocks the
	// router sent it before (DESIGN §6.7); eligible candidates only.
	PredictedTTFTMs float64 `json:"predicted_ttft_ms,omitempty"`
	PrefixMatch     float64 `json:"prefix_match,omitempty"`
}

// CandidatesResponse answers fed.router.candidates.
type CandidatesResponse struct {
	Capability string      `json:"capability"`
	Strategy   string      `json:"strategy"`
	Candidates []Candidate `json:"candidates"`
	// Decisive names the policy that separated the chosen node from the runner-up.
	Decisive string `json:"decisive,omitempty"`
}

// ReplayRequest is the body of fed.node.<id>.replay: send the chunks
// from_seq … to_seq (inclusive) of request_id's stream again, to the
// request's reply subject, exactly as first sent (plus Fed-Replay: true).
type ReplayRequest struct {
	RequestID string `json:"request_id"`
	FromSeq   int    `json:"from_seq"`
	ToSeq     int    `json:"to_seq"`
}

// ReplayResponse answers a replay: how many chunks were sent again. A
// stream the node no longer holds, or a range it holds only part of, is a
// 404 error instead.
type ReplayResponse struct {
	Sent int `json:"sent"`
}

// StatusRequest is the body of fed.node.<id>.status: does the node hold
// request_id? A router asks when a dispatch's ack never came (DESIGN §4).
type StatusRequest struct {
	RequestID string `json:"request_id"`
}

// StatusResponse answers a status request: held is true when the node
// accepted request_id and is running it, or answered it lately (its final
// went out); the router then counts the dispatch as accepted.
type StatusResponse struct {
	Held bool `json:"held"`
}

// HeldAnswer is a router's or node's answer to fed.held.<request_id>
// when it holds the request (DESIGN §3.8): StatusResponse{Held: true}.
// Whoever does not hold it stays silent.
var HeldAnswer = []byte(`{"held":true}`)
