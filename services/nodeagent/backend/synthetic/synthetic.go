// Package synthetic is a model server stand-in for demos, tests and
// benchmarks: its answers are derived deterministically from the input, and
// its timing (time to first token, per-token delay) and failure rate are set
// by Config.
package synthetic

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// DefaultTokens is the answer length when Config.Tokens is 0.
const DefaultTokens = 16

// embedDims is the length of a synthetic embedding vector.
const embedDims = 8

// Config shapes the synthetic model server.
type Config struct {
	TTFT       time.Duration // delay before the first token; 0 adds no sleep
	TokenDelay time.Duration // delay between tokens; 0 adds no sleep
	Tokens     int           // tokens per answer; 0 → DefaultTokens
	// TokensMax > Tokens makes the length vary per request, from Tokens to
	// TokensMax, as a function of the request alone: nodes configured alike
	// give the same answer (what a takeover of a lost node's stream needs).
	TokensMax int
	// FailureRate in [0,1] is the share of requests that fail with 500.
	// Failures are spread evenly by a request counter, so 1 always fails,
	// 0.5 fails every second request, and tests are repeatable.
	FailureRate float64
	// TokensByModel overrides Tokens for a model id.
	TokensByModel map[string]int
	// TokenBytes > 0 makes every token exactly this many bytes.
	TokenBytes int
}

// Backend is the synthetic backend.
type Backend struct {
	cfg   Config
	count atomic.Uint64
}

var (
	_ backend.Backend   = (*Backend)(nil)
	_ backend.Immediate = (*Backend)(nil)
)

// New returns a synthetic backend. Out-of-range values are clamped.
func New(cfg Config) *Backend {
	if cfg.Tokens <= 0 {
		cfg.Tokens = DefaultTokens
	}
	if math.IsNaN(cfg.FailureRate) || cfg.FailureRate < 0 {
		cfg.FailureRate = 0
	}
	if cfg.FailureRate > 1 {
		cfg.FailureRate = 1
	}
	return &Backend{cfg: cfg}
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "synthetic" }

// Resumable: without TokenBytes, token i of an answer is a function of the
// request alone, so a synthetic node continues a stream another one started:
// nodes configured alike (Tokens, TokensMax) give the same answer; with
// other lengths the answers still agree on every position they share.
func (b *Backend) Resumable() bool { return b.cfg.TokenBytes == 0 }

// Continues: a resumable synthetic node continues any answer of its kind
// from a given Fed-Seq (backend.Call.Continue), since it knows the tokens
// before it.
func (b *Backend) Continues() bool { return b.Resumable() }

// ImmediateMaxTokens bounds the answers of a backend that says it answers
// at once (Immediate): longer ones are work enough to belong on a goroutine.
const ImmediateMaxTokens = 4096

// Immediate: without TTFT and TokenDelay the backend never sleeps, and
// with answers of at most ImmediateMaxTokens its work is small and bounded,
// so the agent may run it where the dispatch arrived (backend.Immediate).
func (b *Backend) Immediate() bool {
	if b.cfg.TTFT > 0 || b.cfg.TokenDelay > 0 || max(b.cfg.Tokens, b.cfg.TokensMax) > ImmediateMaxTokens {
		return false
	}
	for _, n := range b.cfg.TokensByModel {
		if n > ImmediateMaxTokens {
			return false
		}
	}
	return true
}

// tokens is the answer length for model (and, with TokensMax, the request).
func (b *Backend) tokens(model string, seed uint64) int {
	if n, ok := b.cfg.TokensByModel[model]; ok && n > 0 {
		return n
	}
	if spread := b.cfg.TokensMax - b.cfg.Tokens; spread > 0 {
		return b.cfg.Tokens + int(mix(seed, -1)%uint64(spread+1))
	}
	return b.cfg.Tokens
}

// fails decides deterministically whether this request fails: the count of
// failures after n requests is floor(n·rate), so the share is exact.
func (b *Backend) fails() bool {
	r := b.cfg.FailureRate
	if r <= 0 {
		return false
	}
	n := b.count.Add(1)
	return math.Floor(float64(n)*r) > math.Floor(float64(n-1)*r)
}

// Generate implements backend.Backend.
func (b *Backend) Generate(ctx context.Context, call backend.Call, emit func([]byte) error) (backend.Result, error) {
	if err := sleep(ctx, b.cfg.TTFT); err != nil {
		return backend.Result{}, err
	}
	if b.fails() {
		return backend.Result{}, wire.Errorf(wire.CodeInternal, "synthetic failure (failure_rate %.2f)", b.cfg.FailureRate)
	}
	seed := seedOf(call)
	n := b.tokens(call.Model, seed)
	if call.Continue != nil && call.Capability != wire.CapGenerate && call.Capability != wire.CapCode {
		return backend.Result{}, wire.Errorf(wire.CodeBadRequest, "cannot continue a %s answer", call.Capability)
	}
	switch call.Capability {
	case wire.CapEmbed:
		return backend.Result{Tokens: n}, emit(embedding(call, seed))
	case wire.CapImagegen:
		return backend.Result{Tokens: n}, emit(image(seed))
	case wire.CapTranscribe:
		out, _ := json.Marshal(map[string]string{"text": strings.TrimSpace(string(b.text(seed, n)))})
		return backend.Result{Tokens: n}, emit(out)
	case wire.CapSynthesize:
		return backend.Result{Tokens: n, ContentType: "audio/wav"}, emit(audio(seed, n))
	}
	start := 0
	if c := call.Continue; c != nil {
		// The client has tokens 0…Seq-1: they must be this answer's, or
		// continuing would splice two answers together.
		if !b.Resumable() {
			return backend.Result{}, wire.Errorf(wire.CodeBadRequest, "synthetic backend with token_bytes cannot continue an answer")
		}
		if want := b.text(seed, min(c.Seq, n)); !bytes.Equal(want, c.Text) {
			return backend.Result{}, wire.Errorf(wire.CodeBadRequest,
				"continuation text (%d bytes) is not the first %d tokens of this answer", len(c.Text), c.Seq)
		}
		start = min(c.Seq, n)
	}
	buf := make([]byte, 0, 32)
	for i := start; i < n; i++ {
		if i > start {
			if err := sleep(ctx, b.cfg.TokenDelay); err != nil {
				return backend.Result{Tokens: i}, err
			}
		}
		if err := ctx.Err(); err != nil {
			return backend.Result{Tokens: i}, err
		}
		buf = b.token(buf[:0], seed, i)
		if err := emit(buf); err != nil {
			return backend.Result{Tokens: i}, err
		}
	}
	return backend.Result{Tokens: n - start}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func seedOf(call backend.Call) uint64 {
	h := fnv.New64a()
	h.Write([]byte(call.Capability))
	h.Write([]byte{0})
	h.Write([]byte(call.Model))
	h.Write([]byte{0})
	h.Write(call.Body)
	h.Write(call.Params)
	return h.Sum64()
}

// mix is splitmix64: a cheap, well-spread hash of seed and i.
func mix(seed uint64, i int) uint64 {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

var words = strings.Fields(`the a mesh node token model route fast slow data region cloud edge
graph vector stream answer query light river stone signal packet queue cache layer weight
prompt infer shard replica north south east west green blue amber quiet bright`)

// token appends token i: a word chosen by the hash, with a leading space after
// the first, padded or cut to TokenBytes when set.
func (b *Backend) token(dst []byte, seed uint64, i int) []byte {
	start := len(dst)
	if i > 0 {
		dst = append(dst, ' ')
	}
	dst = append(dst, words[mix(seed, i)%uint64(len(words))]...)
	if tb := b.cfg.TokenBytes; tb > 0 {
		for len(dst)-start < tb {
			dst = append(dst, '.')
		}
		dst = dst[:start+tb]
	}
	return dst
}

func (b *Backend) text(seed uint64, n int) []byte {
	var out []byte
	for i := 0; i < n; i++ {
		out = b.token(out, seed, i)
	}
	return out
}

func embedding(call backend.Call, seed uint64) []byte {
	vec := make([]float64, embedDims)
	var norm float64
	for i := range vec {
		vec[i] = float64(mix(seed, i)%2001)/1000 - 1
		norm += vec[i] * vec[i]
	}
	if norm > 0 {
		norm = math.Sqrt(norm)
		for i := range vec {
			vec[i] /= norm
		}
	}
	type item struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	out, _ := json.Marshal(map[string]any{
		"object": "list",
		"model":  call.Model,
		"data":   []item{{Object: "embedding", Index: 0, Embedding: vec}},
		"usage":  map[string]int{"prompt_tokens": len(strings.Fields(string(call.Body))), "total_tokens": len(strings.Fields(string(call.Body)))},
	})
	return out
}

func image(seed uint64) []byte {
	px := make([]byte, 8)
	binary.LittleEndian.PutUint64(px, mix(seed, 0))
	out, _ := json.Marshal(map[string]any{
		"created": 0,
		"data":    []map[string]string{{"b64_json": base64.StdEncoding.EncodeToString(px)}},
	})
	return out
}

// audio is a tiny valid WAV header followed by n hashed samples.
func audio(seed uint64, n int) []byte {
	data := make([]byte, 2*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint16(data[2*i:], uint16(mix(seed, i)))
	}
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+len(data)))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)     // PCM
	binary.LittleEndian.PutUint16(h[22:], 1)     // mono
	binary.LittleEndian.PutUint32(h[24:], 16000) // sample rate
	binary.LittleEndian.PutUint32(h[28:], 32000) // byte rate
	binary.LittleEndian.PutUint16(h[32:], 2)     // block align
	binary.LittleEndian.PutUint16(h[34:], 16)    // bits per sample
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(len(data)))
	return append(h, data...)
}
