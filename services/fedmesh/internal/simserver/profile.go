package simserver

import (
	"cmp"
	"fmt"
	"math"
	"strings"
	"time"
)

// Profile is the speed and size of a simulated model server. A step of the
// engine (one forward pass) lasts
//
//	DecodeBase + DecodePerSeq × (sequences decoding) + (prompt tokens prefilled) / PrefillRate
//
// so a bigger batch makes every token of every request slower, and a long
// uncached prompt stalls the batch for its prefill (chunked at
// MaxBatchedTokens per step, as vLLM's chunked prefill does).
type Profile struct {
	Name string
	// DecodeBase is the fixed cost of a step: a batch of one gets a token
	// every DecodeBase + DecodePerSeq.
	DecodeBase time.Duration
	// DecodePerSeq is what each decoding sequence adds to a step.
	DecodePerSeq time.Duration
	// PrefillRate is uncached prompt tokens computed per second.
	PrefillRate float64
	// BlockSize is tokens per KV block (and per prefix-cache block).
	BlockSize int
	// KVBlocks is the KV cache: running requests hold blocks for their
	// prompt and answer, so it bounds the running batch.
	KVBlocks int
	// MaxNumSeqs bounds the running batch (vLLM --max-num-seqs).
	MaxNumSeqs int
	// MaxBatchedTokens is the token budget of one step: one per decoding
	// sequence, the rest for prefill chunks (vLLM --max-num-batched-tokens).
	MaxBatchedTokens int
	// MaxModelLen bounds prompt + answer tokens (vLLM --max-model-len).
	MaxModelLen int
	// PrefixCacheBlocks bounds the blocks of finished requests kept for
	// prefix hits (LRU evicted); 0 means KVBlocks, vLLM's behaviour, where
	// every free block keeps its contents until reused.
	PrefixCacheBlocks int
	// OutputTokens is the typical answer length: without max_tokens (or
	// below it) an answer has OutputTokens/2 … 3·OutputTokens/2 tokens,
	// drawn from the seed and the prompt.
	OutputTokens int
}

// Speed profiles, for a Llama-3-8B-class model. The ratios are what
// matters: an A10 is about 2.5× slower than an H100 with an eighth of its
// KV cache; a CPU server about 15× slower with a batch of 4.
var (
	H100 = Profile{Name: "h100", DecodeBase: 11900 * time.Microsecond, DecodePerSeq: 100 * time.Microsecond,
		PrefillRate: 10000, BlockSize: DefaultBlockSize, KVBlocks: 16384, MaxNumSeqs: 256,
		MaxBatchedTokens: 8192, MaxModelLen: 8192, OutputTokens: DefaultOutputTokens}
	A10 = Profile{Name: "a10", DecodeBase: 29750 * time.Microsecond, DecodePerSeq: 250 * time.Microsecond,
		PrefillRate: 4000, BlockSize: DefaultBlockSize, KVBlocks: 2048, MaxNumSeqs: 64,
		MaxBatchedTokens: 4096, MaxModelLen: 8192, OutputTokens: DefaultOutputTokens}
	CPU = Profile{Name: "cpu", DecodeBase: 178500 * time.Microsecond, DecodePerSeq: 1500 * time.Microsecond,
		PrefillRate: 667, BlockSize: DefaultBlockSize, KVBlocks: 1024, MaxNumSeqs: 4,
		MaxBatchedTokens: 2048, MaxModelLen: 8192, OutputTokens: DefaultOutputTokens}
)

// Profile defaults.
const (
	DefaultBlockSize    = 16
	DefaultOutputTokens = 64
	// DefaultProfile is the profile whose values fill a Profile's zero fields.
	DefaultProfile = "h100"
)

// Profiles lists the named profiles.
func Profiles() []Profile { return []Profile{H100, A10, CPU} }

// ProfileByName returns the named profile (case-insensitive).
func ProfileByName(name string) (Profile, error) {
	for _, p := range Profiles() {
		if strings.EqualFold(p.Name, strings.TrimSpace(name)) {
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("unknown profile %q (want one of %s)", name, ProfileNames())
}

// withDefaults fills zero fields from the h100 profile (named "custom"
// unless it is all h100's).
func (p Profile) withDefaults() Profile {
	d := H100
	if p == (Profile{}) {
		p.Name = d.Name
	}
	p.Name = cmp.Or(p.Name, "custom")
	p.DecodeBase = cmp.Or(p.DecodeBase, d.DecodeBase)
	p.DecodePerSeq = cmp.Or(p.DecodePerSeq, d.DecodePerSeq)
	p.PrefillRate = cmp.Or(p.PrefillRate, d.PrefillRate)
	p.BlockSize = cmp.Or(p.BlockSize, d.BlockSize)
	p.KVBlocks = cmp.Or(p.KVBlocks, d.KVBlocks)
	p.MaxNumSeqs = cmp.Or(p.MaxNumSeqs, d.MaxNumSeqs)
	p.MaxBatchedTokens = cmp.Or(p.MaxBatchedTokens, d.MaxBatchedTokens)
	p.MaxModelLen = cmp.Or(p.MaxModelLen, d.MaxModelLen)
	p.PrefixCacheBlocks = cmp.Or(p.PrefixCacheBlocks, p.KVBlocks)
	p.OutputTokens = cmp.Or(p.OutputTokens, d.OutputTokens)
	return p
}

// Validate names the first field out of range.
func (p Profile) Validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("profile %s: %s %v: want %s", p.Name, field, v, want)
	}
	switch {
	case p.DecodeBase <= 0:
		return bad("decode_base", p.DecodeBase, "> 0")
	case p.DecodePerSeq <= 0:
		return bad("decode_per_seq", p.DecodePerSeq, "> 0")
	case !(p.PrefillRate > 0) || math.IsInf(p.PrefillRate, 0):
		return bad("prefill_rate", p.PrefillRate, "a finite number > 0")
	case p.BlockSize < 1 || p.BlockSize > 1024:
		return bad("block_size", p.BlockSize, "1–1024")
	case p.KVBlocks < 1:
		return bad("kv_blocks", p.KVBlocks, ">= 1")
	case p.MaxNumSeqs < 1:
		return bad("max_num_seqs", p.MaxNumSeqs, ">= 1")
	case p.MaxBatchedTokens <= p.MaxNumSeqs:
		return bad("max_num_batched_tokens", p.MaxBatchedTokens, fmt.Sprintf("> max_num_seqs (%d), or prefill could starve", p.MaxNumSeqs))
	case p.MaxModelLen < 2:
		return bad("max_model_len", p.MaxModelLen, ">= 2")
	case p.PrefixCacheBlocks < 0 || p.PrefixCacheBlocks > p.KVBlocks:
		return bad("prefix_cache_blocks", p.PrefixCacheBlocks, fmt.Sprintf("0–kv_blocks (%d)", p.KVBlocks))
	case p.OutputTokens < 1:
		return bad("output_tokens", p.OutputTokens, ">= 1")
	}
	return nil
}

// stepTime is how long a step takes with dec decoding sequences and
// prefill prompt tokens computed.
func (p Profile) stepTime(dec, prefill int) time.Duration {
	return p.DecodeBase + time.Duration(dec)*p.DecodePerSeq + p.prefillTime(prefill)
}

func (p Profile) prefillTime(tokens int) time.Duration {
	return time.Duration(math.Round(float64(tokens) / p.PrefillRate * float64(time.Second)))
}

// blocks is how many blocks n tokens fill.
func (p Profile) blocks(n int) int { return (n + p.BlockSize - 1) / p.BlockSize }

// ProfileNames lists the profiles' names, for flag help and errors.
func ProfileNames() string {
	names := make([]string, 0, 3)
	for _, p := range Profiles() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}
