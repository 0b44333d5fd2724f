package simserver

import (
	"fmt"
	"slices"
	"time"
)

// Finish reasons, as vLLM reports them (finish_reason and the
// finished_reason label of vllm:request_success_total).
const (
	FinishStop   = "stop"
	FinishLength = "length"
	FinishAbort  = "abort"
)

type seqState int

const (
	stWaiting seqState = iota
	stPrefill
	stDecode
	stDone
)

// seq is one request inside the engine.
type seq struct {
	id     uint64
	prompt int      // prompt tokens
	hashes []uint64 // chained hashes of the prompt's full blocks
	out    int      // answer tokens to generate (0: prefill only, an embedding)
	reason string   // finish reason once out tokens are out
	sink   sink     // where its events go; nil in engine tests

	state       seqState
	gen         int // tokens generated
	prefillLeft int // prompt tokens still to compute
	chunk       int // prompt tokens computed in the current step
	hitTokens   int // prompt tokens found in the prefix cache
	refs        []*block
	private     int // private blocks reserved

	arrival, scheduled, first, last time.Duration
}

// sink receives a request's events once the step that made them has run
// its time.
type sink interface{ deliver(event) }

// event is what one step did for one request: its tokens so far, and
// whether it is finished.
type event struct {
	s      *seq
	gen    int
	cached int // prompt tokens that were prefix-cache hits
	done   bool
	reason string
	at     time.Duration // simulated time of the step's end
}

// engine is the simulated model server, in simulated time and without any
// goroutine of its own: add requests, then step. The server drives it in
// real time; tests drive it directly, so its timings are exact and
// repeatable.
type engine struct {
	p       Profile
	now     time.Duration // simulated clock: the end of the last step
	kv      *kvCache
	waiting []*seq // FIFO
	running []*seq // admission order
	nextID  uint64
	m       engineMetrics
}

func newEngine(p Profile) *engine {
	return &engine{p: p, kv: newKVCache(p.KVBlocks, p.PrefixCacheBlocks), m: newEngineMetrics()}
}

func (e *engine) busy() bool { return len(e.waiting)+len(e.running) > 0 }

// check says whether a request of prompt tokens and out answer tokens
// can ever run: within max_model_len, and within the whole KV pool.
func (e *engine) check(prompt, out int) error {
	if prompt < 1 {
		return fmt.Errorf("the prompt is empty")
	}
	if prompt+out > e.p.MaxModelLen {
		return fmt.Errorf("this model's maximum context length is %d tokens; the request has %d (%d in the prompt, %d in the answer)",
			e.p.MaxModelLen, prompt+out, prompt, out)
	}
	if b := e.p.blocks(prompt + out); b > e.p.KVBlocks {
		return fmt.Errorf("the request needs %d KV blocks of %d tokens; the cache has %d", b, e.p.BlockSize, e.p.KVBlocks)
	}
	return nil
}

// add queues a request that arrived at simulated time at. An idle engine's
// clock moves on to it; a busy one's stays where its steps put it.
func (e *engine) add(tokens []uint64, out int, reason string, snk sink, at time.Duration) (*seq, error) {
	if err := e.check(len(tokens), out); err != nil {
		return nil, err
	}
	if !e.busy() {
		e.now = max(e.now, at)
	}
	e.nextID++
	s := &seq{id: e.nextID, prompt: len(tokens), hashes: blockHashes(tokens, e.p.BlockSize),
		out: out, reason: reason, sink: snk, arrival: min(at, e.now)}
	e.waiting = append(e.waiting, s)
	return s, nil
}

// skipTo moves an engine's clock on to t (when the real clock got ahead).
func (e *engine) skipTo(t time.Duration) { e.now = max(e.now, t) }

// cancel takes a request out, wherever it is; its blocks are released.
// It reports whether the request was still in the engine.
func (e *engine) cancel(s *seq) bool {
	switch s.state {
	case stWaiting:
		i := slices.Index(e.waiting, s)
		if i < 0 {
			return false
		}
		e.waiting = slices.Delete(e.waiting, i, i+1)
	case stPrefill, stDecode:
		i := slices.Index(e.running, s)
		if i < 0 {
			return false
		}
		e.running = slices.Delete(e.running, i, i+1)
		e.kv.release(s.refs, s.private)
	default:
		return false
	}
	s.state = stDone
	e.m.finished[FinishAbort]++
	return true
}

// step runs one engine step from the current clock: decode a token for
// every decoding request, go on with started prefills, admit waiting
// requests (first come, first served) while the batch, the step's token
// budget and the KV cache allow, and prefill them. It returns the step's
// duration and what it did for each request; the clock ends up at the
// step's end.
func (e *engine) step() (time.Duration, []event) {
	start := e.now
	decoding := 0
	for _, s := range e.running {
		if s.state == stDecode {
			decoding++
		}
	}
	budget := e.p.MaxBatchedTokens - decoding
	prefill := 0
	for _, s := range e.running {
		s.chunk = 0
		if s.state == stPrefill && budget > 0 {
			s.chunk = min(s.prefillLeft, budget)
			budget -= s.chunk
			prefill += s.chunk
		}
	}
	for len(e.waiting) > 0 && len(e.running) < e.p.MaxNumSeqs && budget > 0 {
		s := e.waiting[0]
		if !e.admit(s, start) {
			break // first come, first served: nobody overtakes the head
		}
		e.waiting = e.waiting[1:]
		e.running = append(e.running, s)
		s.chunk = min(s.prefillLeft, budget)
		budget -= s.chunk
		prefill += s.chunk
	}
	d := e.p.stepTime(decoding, prefill)
	e.now = start + d

	var evs []event
	keep := e.running[:0]
	for _, s := range e.running {
		emitted := false
		switch s.state {
		case stDecode:
			s.gen++
			e.m.generationTokens++
			e.m.itl.observe(seconds(e.now - s.last))
			s.last = e.now
			emitted = true
		case stPrefill:
			s.prefillLeft -= s.chunk
			if s.prefillLeft > 0 {
				break
			}
			e.m.promptTokens += uint64(s.prompt)
			s.state = stDecode
			s.first, s.last = e.now, e.now
			if s.out > 0 {
				s.gen = 1
				e.m.generationTokens++
				e.m.ttft.observe(seconds(s.first - s.arrival))
				emitted = true
			}
		}
		done := s.state == stDecode && s.gen >= s.out
		if done {
			e.finish(s)
		} else {
			keep = append(keep, s)
		}
		if emitted || done {
			evs = append(evs, event{s: s, gen: s.gen, cached: s.hitTokens, done: done, reason: s.reason, at: e.now})
		}
	}
	clear(e.running[len(keep):])
	e.running = keep
	return d, evs
}

// admit tries to start s at simulated time at: its prefix-cache hits
// (whole blocks, and never the prompt's last token, which must be
// computed to produce the first answer token) and the KV blocks for all
// of its prompt and answer.
func (e *engine) admit(s *seq, at time.Duration) bool {
	limit := (s.prompt - 1) / e.p.BlockSize
	hits, idle := e.kv.lookup(s.hashes, limit)
	private := e.p.blocks(s.prompt+s.out) - len(s.hashes)
	refs, ok := e.kv.admit(s.hashes, hits, idle, private)
	if !ok {
		return false
	}
	s.refs, s.private = refs, private
	s.hitTokens = hits * e.p.BlockSize
	s.prefillLeft = s.prompt - s.hitTokens
	s.state, s.scheduled = stPrefill, at
	e.m.prefixQueries += uint64(s.prompt)
	e.m.prefixHits += uint64(s.hitTokens)
	e.m.queue.observe(seconds(at - s.arrival))
	return true
}

func (e *engine) finish(s *seq) {
	s.state = stDone
	e.kv.release(s.refs, s.private)
	e.m.finished[s.reason]++
	e.m.e2e.observe(seconds(e.now - s.arrival))
	e.m.prefill.observe(seconds(s.first - s.scheduled))
	e.m.decode.observe(seconds(e.now - s.first))
}

// kvUsage is the share of KV blocks in use: the cached blocks running
// requests reference, and the private blocks their tokens so far fill.
func (e *engine) kvUsage() float64 {
	used := e.kv.inUse
	for _, s := range e.running {
		used += e.p.blocks(s.prompt+s.gen) - len(s.hashes)
	}
	return float64(used) / float64(e.p.KVBlocks)
}

func seconds(d time.Duration) float64 { return d.Seconds() }
