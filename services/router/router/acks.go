package router

import (
	crand "crypto/rand"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// acks is the router's one subscription for dispatch acks: every dispatch
// carries the reply subject <inbox>.<token>, a token per attempt, and the
// subscription on <inbox>.* hands each ack to the placement waiting for it.
// Tokens are random, not counted: a node publishes on _INBOX.> (it answers
// without allow_responses, DESIGN §16) and sees the reply subject of every
// dispatch it gets, so with a counter it could forge the acks of the
// dispatches next to its own ("busy" from a node that is not).
// It is nats.go's request mux done by hand, without the channel, context
// and goroutine wake-up a blocking RequestMsg costs per request.
type acks struct {
	prefix string // <inbox>. ; the connection's inbox prefix (custom in secured mode)
	mu     sync.Mutex
	rng    *rand.ChaCha8 // cryptographically strong, seeded from crypto/rand; under mu
	m      map[uint64]pendingAck
	sub    *nats.Subscription
}

// pendingAck is a dispatch awaiting its ack: the placement and the wait
// (placement.waiting) the ack ends.
type pendingAck struct {
	p   *placement
	gen uint64
	// status: the reply is the node's answer to a status question
	// (askStatus), not a dispatch's ack
	status bool
	// grace: the reply is an uncertain node's answer to the status
	// question asked when the finals grace ran out (askGrace); node is
	// the node asked
	grace bool
	node  string
}

func newAcks(inbox string) *acks {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (Go 1.24+)
	return &acks{prefix: inbox + ".", m: map[uint64]pendingAck{}, rng: rand.NewChaCha8(seed)}
}

// subject is the ack subscription's wildcard.
func (a *acks) subject() string { return a.prefix + "*" }

// token hands out the token of a new attempt and its reply subject.
func (a *acks) token() (uint64, string) {
	a.mu.Lock()
	tok := a.rng.Uint64()
	for _, taken := a.m[tok]; tok == 0 || taken; _, taken = a.m[tok] {
		tok = a.rng.Uint64() // 0 is no token; a pending one is not given twice
	}
	a.mu.Unlock()
	var digits [13]byte   // a uint64 in base 36
	var b strings.Builder // one allocation, the subject itself
	b.Grow(len(a.prefix) + len(digits))
	b.WriteString(a.prefix)
	b.Write(strconv.AppendUint(digits[:0], tok, 36))
	return tok, b.String()
}

// put registers the dispatch of token awaiting its ack: p in wait gen.
func (a *acks) put(tok uint64, p *placement, gen uint64) {
	a.mu.Lock()
	a.m[tok] = pendingAck{p: p, gen: gen}
	a.mu.Unlock()
}

// putStatus registers the status question of token, asked for p in wait gen.
func (a *acks) putStatus(tok uint64, p *placement, gen uint64) {
	a.mu.Lock()
	a.m[tok] = pendingAck{p: p, gen: gen, status: true}
	a.mu.Unlock()
}

// putGrace registers the status question of token asked of the uncertain
// node when p's finals grace (wait gen) ran out.
func (a *acks) putGrace(tok uint64, p *placement, gen uint64, node string) {
	a.mu.Lock()
	a.m[tok] = pendingAck{p: p, gen: gen, grace: true, node: node}
	a.mu.Unlock()
}

// take removes and returns the dispatch an ack on subj answers; false for
// an ack nobody waits for any more (it came after its timeout) or a
// subject that is not one of ours.
func (a *acks) take(subj string) (pendingAck, bool) {
	if len(subj) <= len(a.prefix) || subj[:len(a.prefix)] != a.prefix {
		return pendingAck{}, false
	}
	tok, err := strconv.ParseUint(subj[len(a.prefix):], 36, 64)
	if err != nil {
		return pendingAck{}, false
	}
	a.mu.Lock()
	r, ok := a.m[tok]
	if ok {
		delete(a.m, tok)
	}
	a.mu.Unlock()
	return r, ok
}

// unansweredGrace forgets the grace status questions among toks that no
// answer has taken yet and returns their nodes, to be asked again: a
// question replaced so never counts its node twice (an answer racing this
// is taken by one side only, under mu).
func (a *acks) unansweredGrace(toks []uint64) []string {
	var nodes []string
	a.mu.Lock()
	for _, tok := range toks {
		if r, ok := a.m[tok]; ok && r.grace {
			delete(a.m, tok)
			nodes = append(nodes, r.node)
		}
	}
	a.mu.Unlock()
	return nodes
}

// drop forgets the dispatch of token (its wait ended another way).
func (a *acks) drop(tok uint64) {
	a.mu.Lock()
	delete(a.m, tok)
	a.mu.Unlock()
}

func (a *acks) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
