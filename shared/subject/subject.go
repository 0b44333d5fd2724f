// Package subject builds every NATS subject fedmesh uses. Subjects are part of
// the wire format (DESIGN §2): other programs and the nats CLI depend on them,
// so they are spelled here and nowhere else.
package subject

import "strings"

// DefaultPrefix is the first token of every fedmesh subject.
const DefaultPrefix = "fed"

// Space is a subject namespace. The zero value uses DefaultPrefix, so
// subject.Space{} is ready to use.
type Space struct {
	Prefix string
}

// Default is the namespace with the default prefix.
var Default = Space{Prefix: DefaultPrefix}

func (s Space) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

func (s Space) join(parts ...string) string {
	return s.p() + "." + strings.Join(parts, ".")
}

// Infer is the subject a client publishes a request for capability on.
func (s Space) Infer(capability string) string { return s.join("infer", capability) }

// InferAll is the wildcard the routers' queue group listens on.
func (s Space) InferAll() string { return s.join("infer", ">") }

// InferPrefix is what precedes the capability in an infer subject ("fed.infer.").
func (s Space) InferPrefix() string { return s.p() + ".infer." }

// NodeInfer is the base of a node's dispatch subjects (its catalog record's
// subject); dispatches go to NodeInferAt.
func (s Space) NodeInfer(nodeID string) string { return s.join("node", nodeID, "infer") }

// NodeInferAt is the subject of a dispatch of privacy level (its name:
// public, internal, confidential, restricted): a node subscribes only to the
// levels its clearance allows, so in secured mode the server itself refuses
// to deliver data above a credential's clearance (DESIGN §2, §13).
func (s Space) NodeInferAt(nodeID, level string) string {
	return s.join("node", nodeID, "infer", level)
}

// NodeProbe is a node's liveness endpoint; health probes nodes that report
// nothing (DESIGN §6 "active probe"). Addition to DESIGN §2.
func (s Space) NodeProbe(nodeID string) string { return s.join("node", nodeID, "probe") }

// NodeReplay is where a client asks a node to send a stream's chunks again
// (the ones it missed, e.g. in a server failover).
func (s Space) NodeReplay(nodeID string) string { return s.join("node", nodeID, "replay") }

// NodeStatus is where a router whose dispatch ack never came asks the node
// whether it holds the request (accepted and running, or answered lately)
// before placing it elsewhere (DESIGN §4).
func (s Space) NodeStatus(nodeID string) string { return s.join("node", nodeID, "status") }

// Cancel is the subject that cancels one request's stream.
func (s Space) Cancel(requestID string) string { return s.join("cancel", requestID) }

// CancelAll matches every cancel subject.
func (s Space) CancelAll() string { return s.join("cancel", "*") }

// Held is where a client that has heard nothing of its request asks who
// holds it (DESIGN §3.8): every router and node agent listens on HeldAll,
// and only one that holds it answers.
func (s Space) Held(requestID string) string { return s.join("held", requestID) }

// HeldAll matches every held question.
func (s Space) HeldAll() string { return s.join("held", "*") }

// Heartbeat is a node's load-report subject.
func (s Space) Heartbeat(nodeID string) string { return s.join("heartbeat", nodeID) }

// HeartbeatAll matches every node's heartbeat.
func (s Space) HeartbeatAll() string { return s.join("heartbeat", "*") }

// Outcome is the subject of a node's finished-request events.
func (s Space) Outcome(nodeID string) string { return s.join("outcome", nodeID) }

// OutcomeAll matches every node's outcome events.
func (s Space) OutcomeAll() string { return s.join("outcome", "*") }

// RouterFailed carries a router's dispatch_failed outcomes about a node:
// on their own subject, so permissions can tell a router's report from a
// node's (DESIGN §2, §13); RouterFailedAll matches every node's.
func (s Space) RouterFailed(nodeID string) string { return s.join("router", "failed", nodeID) }
func (s Space) RouterFailedAll() string           { return s.join("router", "failed", "*") }

// ClientDuplicate carries a client's duplicate outcome about a node that
// answered a request another node had (DESIGN §3.3).
func (s Space) ClientDuplicate(nodeID string) string { return s.join("client", "duplicate", nodeID) }
func (s Space) ClientDuplicateAll() string           { return s.join("client", "duplicate", "*") }

// Unplaced carries events for requests the router answered itself because no
// node could take them (no capacity, privacy, unknown model). They belong to
// no node, so they do not go on an outcome subject. (Addition to DESIGN §2.)
func (s Space) Unplaced() string { return s.join("router", "unplaced") }

// CatalogRegisterAs is a node's bound register subject: its id, region
// and clearance as tokens, which a node credential pins (DESIGN §10.1, §13),
// so the catalog takes them from what the server let through, not from the
// body alone. CatalogRegisterBound matches every node's.
func (s Space) CatalogRegisterAs(nodeID, region, clearance string) string {
	return s.join("catalog", "register", nodeID, region, clearance)
}
func (s Space) CatalogRegisterBound() string { return s.join("catalog", "register", "*", "*", "*") }

// CatalogDeregisterAs is a node's bound deregister subject.
func (s Space) CatalogDeregisterAs(nodeID string) string {
	return s.join("catalog", "deregister", nodeID)
}
func (s Space) CatalogDeregisterBound() string { return s.join("catalog", "deregister", "*") }

// Catalog endpoints (micro service fed-catalog).
func (s Space) CatalogRegister() string   { return s.join("catalog", "register") }
func (s Space) CatalogDeregister() string { return s.join("catalog", "deregister") }
func (s Space) CatalogFind() string       { return s.join("catalog", "find") }
func (s Space) CatalogList() string       { return s.join("catalog", "list") }
func (s Space) CatalogGet() string        { return s.join("catalog", "get") }

// Health endpoints (micro service fed-health).
func (s Space) HealthGet() string  { return s.join("health", "get") }
func (s Space) HealthList() string { return s.join("health", "list") }
func (s Space) Stats() string      { return s.join("stats") }

// HealthStats is the event each health instance publishes with its
// fed.stats answer when it changed (DESIGN §9.6): what `fedmesh top`
// follows instead of asking.
func (s Space) HealthStats() string { return s.join("health", "stats") }

// RouterCandidates is the router's explain endpoint.
func (s Space) RouterCandidates() string { return s.join("router", "candidates") }

// LastToken returns what follows the final dot of subj.
func LastToken(subj string) string {
	if i := strings.LastIndexByte(subj, '.'); i >= 0 {
		return subj[i+1:]
	}
	return subj
}

// InferAs is the infer subject of a request of tenant: the secured form
// fed.infer.<capability>.<tenant>, where a credential may only publish
// its own tenant's (DESIGN §2, §13).
func (s Space) InferAs(capability, tenant string) string { return s.join("infer", capability, tenant) }

// CapabilityOf returns the capability of an infer subject ("fed.infer.custom.x"
// gives "custom.x"), or "" when subj is not one.
func (s Space) CapabilityOf(subj string) string {
	c, _ := s.InferParts(subj)
	return c
}

// InferParts splits an infer subject into its capability and the tenant
// token of the secured form (fed.infer.<capability>.<tenant>; "" in
// fed.infer.<capability>). A custom capability is two tokens (custom.x).
func (s Space) InferParts(subj string) (capability, tenant string) {
	pre := s.InferPrefix()
	if !strings.HasPrefix(subj, pre) {
		return "", ""
	}
	rest := subj[len(pre):]
	first, after, _ := strings.Cut(rest, ".")
	if first == "custom" {
		name, t, _ := strings.Cut(after, ".")
		return "custom." + name, t
	}
	return first, after
}

// Service names as seen by `nats micro ls`.
const (
	ServiceCatalog = "fed-catalog"
	ServiceHealth  = "fed-health"
	ServiceRouter  = "fed-router"
	ServiceNode    = "fed-node"
)

// Queue groups.
const (
	QueueRouter  = "fed-router"
	QueueCatalog = "fed-catalog"
	QueueHealth  = "fed-health"
)

// Decisions carries every router's batched placements (DESIGN §9.5).
func (s Space) Decisions() string { return s.join("router", "decisions") }
