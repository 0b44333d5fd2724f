package wire

import (
	"strconv"

	"github.com/nats-io/nats.go"
)

// Reply builds the messages a request's server (a node, or a router that
// cannot place the request) sends to the client's inbox. Every message
// carries Fed-Request-Id, Fed-Node (when a node sends it) and Fed-Seq.
type Reply struct {
	Inbox     string
	RequestID string
	Node      string
	// Takeover is the lost node this reply continues for (Fed-Takeover).
	Takeover string
	seq      int
}

// StartAt makes the next message carry Fed-Seq seq: a continuation's
// first chunk follows the ones the client has (DESIGN §4 step 9).
func (r *Reply) StartAt(seq int) { r.seq = seq }

// header starts a message's headers with room for extra more values:
// the map is sized for exactly the headers it will hold. (A map hint of 8
// or less is one small group; a ninth header turns it into a table, and
// growing it there cost a final 1.3 KB more than sizing it right away.)
func (r *Reply) header(extra int) headerValues {
	n := 1 + extra // Fed-Seq
	for _, v := range [...]string{r.RequestID, r.Node, r.Takeover} {
		if v != "" {
			n++
		}
	}
	h := headerValues{h: make(nats.Header, n), vals: make([]string, 0, n)}
	if r.RequestID != "" {
		h.set(HdrRequestID, r.RequestID)
	}
	if r.Node != "" {
		h.set(HdrNode, r.Node)
	}
	if r.Takeover != "" {
		h.set(HdrTakeover, r.Takeover)
	}
	h.set(HdrSeq, strconv.Itoa(r.seq))
	r.seq++
	return h
}

// headerValues builds a reply's headers with one backing slice for all
// their values (nats.Header.Set allocates one per header): two
// allocations per message instead of one per header. The keys are this
// package's constants, already in canonical form.
type headerValues struct {
	h    nats.Header
	vals []string
}

func (b *headerValues) set(k, v string) {
	n := len(b.vals)
	b.vals = append(b.vals, v)
	b.h[k] = b.vals[n : n+1 : n+1] // capped: an Add to one header never writes into the next
}

// Chunk is one streamed piece of output.
func (r *Reply) Chunk(data []byte) *nats.Msg {
	return &nats.Msg{Subject: r.Inbox, Header: r.header(0).h, Data: data}
}

// NextChunk is Chunk for a stream that publishes its chunks one by one:
// prev, the previous chunk NextChunk or Chunk returned (nil for the first),
// is reused with the next Fed-Seq and data, so a stream allocates no
// message per chunk. prev must have been published (nats.go copies a
// message out when it publishes it) and not be kept by anyone.
func (r *Reply) NextChunk(prev *nats.Msg, data []byte) *nats.Msg {
	if prev == nil || len(prev.Header[HdrSeq]) != 1 {
		return r.Chunk(data)
	}
	prev.Header[HdrSeq][0] = strconv.Itoa(r.seq)
	r.seq++
	prev.Data = data
	return prev
}

// Done is the final success message. data is the whole output for a
// non-streamed answer and nil (the ADR-47 empty sentinel) after a stream.
func (r *Reply) Done(data []byte, d DoneInfo) *nats.Msg {
	extra := 3 // status, tokens, latency
	for _, present := range [...]bool{d.TTFTMs > 0, d.RouteScore != "", d.ContentType != ""} {
		if present {
			extra++
		}
	}
	h := r.header(extra)
	h.set(HdrStatus, StatusDone)
	h.set(HdrTokens, strconv.Itoa(d.Tokens))
	h.set(HdrLatencyMs, strconv.FormatFloat(d.LatencyMs, 'f', 3, 64))
	if d.TTFTMs > 0 {
		h.set(HdrTTFTMs, strconv.FormatFloat(d.TTFTMs, 'f', 3, 64))
	}
	if d.RouteScore != "" {
		h.set(HdrRouteScore, d.RouteScore)
	}
	if d.ContentType != "" {
		h.set(HdrContentType, d.ContentType)
	}
	return &nats.Msg{Subject: r.Inbox, Header: h.h, Data: data}
}

// Fail is the final error message; its payload is empty so stream readers
// that wait for the empty sentinel stop on it too.
func (r *Reply) Fail(code int, description string) *nats.Msg {
	h := r.header(3).h
	SetError(h, code, description)
	return &nats.Msg{Subject: r.Inbox, Header: h}
}

// Seq is the Fed-Seq the next message will carry.
func (r *Reply) Seq() int { return r.seq }

// DoneInfo is what a final success message reports.
type DoneInfo struct {
	Tokens     int
	LatencyMs  float64
	TTFTMs     float64
	RouteScore string // as received in the dispatch, passed through
	// ContentType is the answer's Content-Type, when the backend named one
	ContentType string
}

// IsFinal reports whether m ends its request: it has Fed-Status done or
// error, or it is a NATS no-responders status.
func IsFinal(m *nats.Msg) bool {
	if m.Header == nil {
		return false
	}
	switch m.Header.Get(HdrStatus) {
	case StatusDone, StatusError:
		return true
	}
	return IsNoResponders(m)
}

// IsNoResponders reports whether m is the server's 503 for a request that no
// subscriber could receive.
func IsNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header != nil && m.Header.Get("Status") == "503"
}
