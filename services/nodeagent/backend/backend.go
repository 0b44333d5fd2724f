// Package backend is the node agent's view of a model server: one call per
// request that emits the answer's pieces as they are produced.
package backend

import (
	"context"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Call is one inference request as the agent hands it to a backend: what
// to run, on which model, with which input.
type Call struct {
	RequestID  string
	Capability string // wire.Cap* or custom.<name>
	Model      string // the model id the agent picked (Fed-Model or the first serving the capability)
	Body       []byte // the model input, as the client sent it (see wire/payloads.go)
	// Params is the Fed-Params JSON of requests whose body is binary (transcribe).
	Params []byte
	// Stream is true when the client asked for separate chunks; a backend may
	// then ask its server for a streamed answer. Either way it calls emit.
	Stream bool
	// Continue is set on a continuation (DESIGN §4 step 9): another node
	// began this answer and was lost; the client already has its first
	// Continue.Seq chunks, whose text is Continue.Text. The backend emits
	// only what follows. Only backends that report Continues get one.
	Continue *Continuation
}

// Continuation is the part of an answer a client already holds.
type Continuation struct {
	Seq  int    // chunks the client has (the next Fed-Seq is Seq)
	Text []byte // their concatenated bytes
}

// Result is what a backend reports once the answer is complete.
type Result struct {
	// Tokens produced (completion tokens); 0 when the backend cannot tell.
	Tokens int
	// ContentType of a binary answer (audio), sent as Fed-Content-Type.
	ContentType string
}

// Emit receives one piece of the answer. The slice is only valid during the
// call (a backend may reuse it). An error from Emit means the request is
// over (client gone, canceled): the backend must stop and return it.
type Emit func(chunk []byte) error

// Backend runs requests against one model server. Generate blocks until the
// answer is complete, ctx ends or emit fails; it must return promptly once ctx
// is done. It calls emit from one goroutine at a time and never after it
// returns (the agent times the first call as TTFT). Errors should be *wire.Error so the final message carries the
// right code (anything else is reported as 500).
type Backend interface {
	Name() string
	Generate(ctx context.Context, call Call, emit func(chunk []byte) error) (Result, error)
}

// Resumable is implemented by backends whose output for a request is the
// same on every node (the synthetic backend): a stream a lost node cut can
// then continue on another such node at the next Fed-Seq (DESIGN §4).
type Resumable interface {
	Resumable() bool
}

// Continuer is implemented by backends that can continue an answer from
// its text so far (an OpenAI-compatible server with vLLM's
// continue_final_message, the synthetic backend by construction).
type Continuer interface {
	Continues() bool
}

// Continues reports whether b says it can continue a given answer.
func Continues(b Backend) bool {
	c, ok := b.(Continuer)
	return ok && c.Continues()
}

// IsResumable reports whether b says it is resumable.
func IsResumable(b Backend) bool {
	r, ok := b.(Resumable)
	return ok && r.Resumable()
}

// Immediate is implemented by backends whose Generate never blocks: no
// I/O, no sleeps, a bounded amount of work (the synthetic backend without
// delays). The agent then runs a whole answer where the dispatch arrived,
// without a goroutine, and may let its completed outcome be the dispatch's
// ack (DESIGN §4). A backend that talks to a model server must not say so.
type Immediate interface {
	Immediate() bool
}

// AnswersAtOnce reports whether b says its Generate never blocks.
func AnswersAtOnce(b Backend) bool {
	i, ok := b.(Immediate)
	return ok && i.Immediate()
}

// ConnStats is implemented by backends that reach their model server over
// pooled connections: how many requests got a newly opened connection and
// how many reused one (the agent exports them as a metric; issue 16 asks
// for ≈ 0 new connections per request after warm-up).
type ConnStats interface {
	Stats() (newConns, reused uint64)
}

// Errorf builds a backend error with a wire code.
func Errorf(code int, format string, args ...any) error {
	return wire.Errorf(code, format, args...)
}
