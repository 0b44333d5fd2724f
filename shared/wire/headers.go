// Package wire holds fedmesh's wire format: header names, statuses, error
// codes, privacy levels, capability and id rules, and the decoding of a
// request's routing headers (DESIGN §2–§4). Nothing else spells these names.
package wire

import "strings"

// Request headers set by clients (DESIGN §3).
const (
	HdrRequestID     = "Fed-Request-Id"
	HdrTenant        = "Fed-Tenant"
	HdrModel         = "Fed-Model"
	HdrPrivacy       = "Fed-Privacy"
	HdrRegions       = "Fed-Regions"
	HdrMaxLatencyMs  = "Fed-Max-Latency-Ms"
	HdrMinThroughput = "Fed-Min-Throughput"
	HdrPreferGPU     = "Fed-Prefer-Gpu"
	HdrCostTolerance = "Fed-Cost-Tolerance"
	HdrRegion        = "Fed-Region"
	HdrSession       = "Fed-Session"
	HdrStream        = "Fed-Stream"
	HdrTimeoutMs     = "Fed-Timeout-Ms"
	// HdrNoResume: true asks that a stream whose node is lost mid-way end in
	// a 503 rather than continue on another node.
	HdrNoResume = "Fed-No-Resume"
	// HdrContinueSeq and HdrContinueText ask for a continuation (DESIGN
	// §4 step 9): the client has the first N chunks of a stream whose node
	// was lost, and their text (standard base64); the node that takes the
	// request emits only what follows, from Fed-Seq N.
	HdrContinueSeq  = "Fed-Continue-Seq"
	HdrContinueText = "Fed-Continue-Text"
	// HdrCancelKey is the request's cancel secret (DESIGN §3.4): a cancel
	// of it takes effect only when it carries the same key. The SDK makes
	// one per request; routers pass it on in the dispatch. Only the
	// requester, routers and the serving node see it: a targeted cancel,
	// which every node hears, carries WithdrawKey instead.
	HdrCancelKey = "Fed-Cancel-Key"
	// MaxCancelKeyLen bounds Fed-Cancel-Key.
	MaxCancelKeyLen = 64
)

// Dispatch headers added by a router (DESIGN §4).
const (
	HdrReplyTo    = "Fed-Reply-To"
	HdrAttempt    = "Fed-Attempt"
	HdrRouteScore = "Fed-Route-Score"
	// HdrDeadline is the absolute end-to-end deadline in Unix milliseconds.
	HdrDeadline   = "Fed-Deadline"
	HdrCapability = "Fed-Capability"
	// HdrAckDeadline is when the router stops waiting for this dispatch's
	// ack, in Unix milliseconds. A node that receives the dispatch later
	// never starts it: the router has given up and may have placed the
	// request elsewhere, so running it would give the client two answers.
	HdrAckDeadline = "Fed-Ack-Deadline"
	// HdrAckDone ("true") says the router takes the ack Fed-Status: done:
	// accepted, and the final already went out. A node whose backend
	// answers at once may then send the final first and that ack after it,
	// instead of an accepted ack before (DESIGN §4).
	HdrAckDone = "Fed-Ack-Done"
	// HdrTakeover names the lost node whose accepted request a router hands
	// to another node; that node echoes it on every message it sends for
	// the request, so clients accept it in the lost node's place.
	HdrTakeover = "Fed-Takeover"
)

// Load headers on a node's dispatch ack (accepted and busy), so every
// router learns the node's load at once, not at the next heartbeat.
const (
	HdrInFlight       = "Fed-In-Flight"
	HdrMaxConcurrency = "Fed-Max-Concurrency"
)

// Response headers on every message a node sends to a client inbox.
const (
	HdrNode      = "Fed-Node"
	HdrSeq       = "Fed-Seq"
	HdrStatus    = "Fed-Status"
	HdrTokens    = "Fed-Tokens"
	HdrLatencyMs = "Fed-Latency-Ms"
	HdrTTFTMs    = "Fed-Ttft-Ms"
	HdrAttempts  = "Fed-Attempts"
	// HdrReplay marks a chunk a node sends again on a client's replay
	// request (its Fed-Seq and payload are those of the first sending).
	HdrReplay = "Fed-Replay"
	// HdrLostNode is on a router's final error for a request whose node was
	// lost after accepting it and that could not continue elsewhere: the
	// final replaces the lost node's (clients accept it after that node's
	// messages).
	HdrLostNode = "Fed-Lost-Node"
)

// Micro-style error headers (the nats.go micro package uses the same names).
const (
	HdrServiceError     = "Nats-Service-Error"
	HdrServiceErrorCode = "Nats-Service-Error-Code"
)

// Status values of Fed-Status.
const (
	// StatusAccepted, StatusBusy and StatusDraining answer a router's dispatch.
	StatusAccepted = "accepted"
	StatusBusy     = "busy"
	StatusDraining = "draining"
	// StatusDone and StatusError mark the final message of a request.
	StatusDone  = "done"
	StatusError = "error"
)

// MaxLostNodes bounds the lost-node list of Fed-Takeover and Fed-Lost-Node.
const MaxLostNodes = 8

// AddLost appends node to a Fed-Takeover / Fed-Lost-Node list (node ids,
// comma-separated, oldest first, at most MaxLostNodes: the oldest go). A
// request lost twice (A, then B before B sent anything) names both, so a
// client that still keeps A accepts the node after B.
func AddLost(list, node string) string {
	if list == "" {
		return node
	}
	n := strings.Count(list, ",") + 1
	for ; n >= MaxLostNodes; n-- {
		list = list[strings.IndexByte(list, ',')+1:]
	}
	return list + "," + node
}

// NamesLost reports whether a Fed-Takeover / Fed-Lost-Node list names node.
func NamesLost(list, node string) bool {
	for list != "" {
		var id string
		id, list, _ = strings.Cut(list, ",")
		if id == node {
			return true
		}
	}
	return false
}

// LostList calls fn for each node of a Fed-Takeover / Fed-Lost-Node list.
func LostList(list string, fn func(node string)) {
	for list != "" {
		var id string
		id, list, _ = strings.Cut(list, ",")
		if id != "" {
			fn(id)
		}
	}
}
