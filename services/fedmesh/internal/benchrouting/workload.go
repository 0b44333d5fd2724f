package benchrouting

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// Workload names (Options.Workloads, --workloads).
const (
	WorkloadSharedPrefix = "shared_prefix"
	WorkloadMultiTurn    = "multi_turn"
	WorkloadNoSharing    = "no_sharing"
)

// Workloads lists the workload names in the order a run takes them.
var Workloads = []string{WorkloadSharedPrefix, WorkloadMultiTurn, WorkloadNoSharing}

// SharedPrefix is inference-perf's shared_prefix shape: Groups system
// prompts of SystemTokens tokens; each request is one group's system
// prompt (drawn uniformly) and a question of its own.
type SharedPrefix struct {
	Groups       int
	SystemTokens int
	QuestionMin  int // question tokens, drawn uniformly from [QuestionMin, QuestionMax]
	QuestionMax  int
	Output       int // answer tokens (max_tokens with ignore_eos)
}

// MultiTurn is chat whose context grows per turn: Conversations are kept
// going at once; each has Turns turns, the first a user message of
// FirstTokens tokens, every later one the whole history (the answers the
// server gave included) and a follow-up of FollowMin…FollowMax tokens. An
// arrival takes a random conversation that is not waiting for an answer; a
// finished conversation is replaced by a new one.
type MultiTurn struct {
	Conversations int
	Turns         int
	FirstTokens   int
	FollowMin     int
	FollowMax     int
	Output        int
}

// NoSharing is requests without any common prefix: PromptMin…PromptMax
// tokens of their own each.
type NoSharing struct {
	PromptMin int
	PromptMax int
	Output    int
}

// Default shapes. Prompts are long so prefill dominates, as in
// inference-perf's shared_prefix runs (thousands of tokens of system
// prompt), answers short so the token messages of a run fit 2 cores.
// shared_prefix has 64 groups, SGLang's generated-shared-prefix default:
// with 8 servers that is 8 system prompts per server, so requests
// running at once on one server seldom share one by chance (with 16, an
// overloaded a10 under round_robin ran several of a group at once and got
// a third of its prompt tokens from that alone).
var (
	DefaultSharedPrefix = SharedPrefix{Groups: 64, SystemTokens: 4000, QuestionMin: 50, QuestionMax: 200, Output: 32}
	DefaultMultiTurn    = MultiTurn{Conversations: 24, Turns: 5, FirstTokens: 1500, FollowMin: 100, FollowMax: 200, Output: 32}
	DefaultNoSharing    = NoSharing{PromptMin: 1500, PromptMax: 3000, Output: 32}
)

// withDefaults fills each zero field from DefaultSharedPrefix, so one
// field (--groups) can be set alone.
func (w SharedPrefix) withDefaults() SharedPrefix {
	d := DefaultSharedPrefix
	if w.Groups == 0 {
		w.Groups = d.Groups
	}
	if w.SystemTokens == 0 {
		w.SystemTokens = d.SystemTokens
	}
	if w.QuestionMin == 0 && w.QuestionMax == 0 {
		w.QuestionMin, w.QuestionMax = d.QuestionMin, d.QuestionMax
	}
	if w.Output == 0 {
		w.Output = d.Output
	}
	return w
}

func (w MultiTurn) withDefaults() MultiTurn {
	if w == (MultiTurn{}) {
		return DefaultMultiTurn
	}
	return w
}

func (w NoSharing) withDefaults() NoSharing {
	if w == (NoSharing{}) {
		return DefaultNoSharing
	}
	return w
}

func (w SharedPrefix) validate() error {
	if w.Groups < 1 || w.SystemTokens < 1 || w.QuestionMin < 1 || w.QuestionMax < w.QuestionMin || w.Output < 1 {
		return fmt.Errorf("shared_prefix %+v: want groups, system tokens, questions and output >= 1, question_min <= question_max", w)
	}
	return nil
}

func (w MultiTurn) validate() error {
	if w.Conversations < 1 || w.Turns < 1 || w.FirstTokens < 1 || w.FollowMin < 1 || w.FollowMax < w.FollowMin || w.Output < 1 {
		return fmt.Errorf("multi_turn %+v: want every field >= 1, follow_min <= follow_max", w)
	}
	return nil
}

func (w NoSharing) validate() error {
	if w.PromptMin < 1 || w.PromptMax < w.PromptMin || w.Output < 1 {
		return fmt.Errorf("no_sharing %+v: want prompt and output >= 1, prompt_min <= prompt_max", w)
	}
	return nil
}

// templateTokens is about what simserver's chat template adds per message
// ("<|role|>\n" … "<|end|>\n"), for the capacity estimate.
const templateTokens = 8

// workload is one of the three shapes: what a run needs of it.
type workload interface {
	name() string
	// describe is the shape in words, for the report.
	describe() string
	// meanPrompt is the mean prompt length in tokens, for capacity.
	meanPrompt() float64
	output() int
	// source is the requests of one run, from seed.
	source(seed uint64) source
}

// source hands out the request for each arrival; done tells it how the
// request ended (the answer text when ok), which multi-turn chat needs
// for the next turn. Both are safe for concurrent use.
type source interface {
	next() *turn
	done(t *turn, answer string, ok bool)
}

// turn is one request of a run.
type turn struct {
	body    []byte
	group   int // shared_prefix: its group; multi_turn: its conversation; else -1
	index   int // multi_turn: 1-based turn; else 1
	private any // the source's own state
}

// chatBody is the OpenAI chat body a request carries: messages first, so
// requests with the same history share their leading bytes (the router's
// prefix index hashes the body as sent, DESIGN §6.7); max_tokens with
// ignore_eos, so every answer has exactly that many tokens.
type chatBody struct {
	Messages  []chatMessage `json:"messages"`
	MaxTokens int           `json:"max_tokens"`
	IgnoreEOS bool          `json:"ignore_eos"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func encodeChat(msgs []chatMessage, out int) []byte {
	b, err := json.Marshal(chatBody{Messages: msgs, MaxTokens: out, IgnoreEOS: true})
	if err != nil {
		panic(err) // strings and ints only: cannot fail
	}
	return b
}

// text is n tokens of simserver's tokenizer (DESIGN §14): words of one to
// four lower-case letters, one token each, and the single spaces between
// them, one token each; an even n ends with a space.
func text(r *rand.Rand, n int) string {
	if n < 1 {
		return ""
	}
	var b strings.Builder
	b.Grow(n * 3)
	for i := range n {
		if i%2 == 1 {
			b.WriteByte(' ')
			continue
		}
		for range 1 + r.IntN(4) {
			b.WriteByte(byte('a' + r.IntN(26)))
		}
	}
	return b.String()
}

func uniform(r *rand.Rand, lo, hi int) int { return lo + r.IntN(hi-lo+1) }

func newRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

// --- shared_prefix ---

func (w SharedPrefix) name() string { return WorkloadSharedPrefix }

func (w SharedPrefix) describe() string {
	return fmt.Sprintf("%d groups × %d-token system prompt × %d–%d-token question, %d-token answers; the group drawn uniformly per request",
		w.Groups, w.SystemTokens, w.QuestionMin, w.QuestionMax, w.Output)
}

func (w SharedPrefix) meanPrompt() float64 {
	return float64(w.SystemTokens) + float64(w.QuestionMin+w.QuestionMax)/2 + 3*templateTokens
}

func (w SharedPrefix) output() int { return w.Output }

func (w SharedPrefix) source(seed uint64) source {
	s := &sharedSource{w: w, r: newRand(seed, 1), system: make([]string, w.Groups)}
	for g := range w.Groups {
		s.system[g] = text(newRand(seed, 1000+uint64(g)), w.SystemTokens)
	}
	return s
}

type sharedSource struct {
	w      SharedPrefix
	mu     sync.Mutex
	r      *rand.Rand
	system []string
}

func (s *sharedSource) next() *turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.r.IntN(s.w.Groups)
	q := text(s.r, uniform(s.r, s.w.QuestionMin, s.w.QuestionMax))
	return &turn{group: g, index: 1, body: encodeChat([]chatMessage{
		{Role: "system", Content: s.system[g]}, {Role: "user", Content: q}}, s.w.Output)}
}

func (s *sharedSource) done(*turn, string, bool) {}

// --- no_sharing ---

func (w NoSharing) name() string { return WorkloadNoSharing }

func (w NoSharing) describe() string {
	return fmt.Sprintf("prompts of %d–%d tokens of their own, %d-token answers", w.PromptMin, w.PromptMax, w.Output)
}

func (w NoSharing) meanPrompt() float64 {
	return float64(w.PromptMin+w.PromptMax)/2 + 2*templateTokens
}

func (w NoSharing) output() int { return w.Output }

func (w NoSharing) source(seed uint64) source { return &noSharingSource{w: w, r: newRand(seed, 3)} }

type noSharingSource struct {
	w  NoSharing
	mu sync.Mutex
	r  *rand.Rand
}

func (s *noSharingSource) next() *turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := text(s.r, uniform(s.r, s.w.PromptMin, s.w.PromptMax))
	return &turn{group: -1, index: 1, body: encodeChat([]chatMessage{{Role: "user", Content: p}}, s.w.Output)}
}

func (s *noSharingSource) done(*turn, string, bool) {}

// --- multi_turn ---

func (w MultiTurn) name() string { return WorkloadMultiTurn }

func (w MultiTurn) describe() string {
	return fmt.Sprintf("%d conversations at a time × %d turns: a %d-token first message, then the history and a %d–%d-token follow-up per turn, %d-token answers",
		w.Conversations, w.Turns, w.FirstTokens, w.FollowMin, w.FollowMax, w.Output)
}

// meanPrompt: turn t (1-based) carries the first message, t−1 answers and
// t−1 follow-ups, each with its template.
func (w MultiTurn) meanPrompt() float64 {
	follow := float64(w.FollowMin+w.FollowMax)/2 + templateTokens
	answer := float64(w.Output) + templateTokens
	past := float64(w.Turns-1) / 2 // mean earlier turns over turns 1…Turns
	return float64(w.FirstTokens) + 2*templateTokens + past*(follow+answer)
}

func (w MultiTurn) output() int { return w.Output }

func (w MultiTurn) source(seed uint64) source {
	return &multiSource{w: w, seed: seed, r: newRand(seed, 2)}
}

type conversation struct {
	id   int
	msgs []chatMessage
	turn int  // turns sent
	busy bool // waiting for an answer
}

type multiSource struct {
	w      MultiTurn
	seed   uint64
	mu     sync.Mutex
	r      *rand.Rand
	active []*conversation
	nextID int
}

func (s *multiSource) newConversation() *conversation {
	s.nextID++
	c := &conversation{id: s.nextID}
	// each conversation's first message from its own stream: the same
	// conversation id always opens with the same text
	c.msgs = []chatMessage{{Role: "user", Content: text(newRand(s.seed, 1<<32+uint64(c.id)), s.w.FirstTokens)}}
	s.active = append(s.active, c)
	return c
}

func (s *multiSource) next() *turn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var c *conversation
	if len(s.active) < s.w.Conversations {
		c = s.newConversation()
	} else {
		var idle []*conversation
		for _, a := range s.active {
			if !a.busy {
				idle = append(idle, a)
			}
		}
		if len(idle) == 0 {
			c = s.newConversation() // every one waits for its answer: one more
		} else {
			c = idle[s.r.IntN(len(idle))]
		}
	}
	c.turn++
	if c.turn > 1 {
		c.msgs = append(c.msgs, chatMessage{Role: "user", Content: text(s.r, uniform(s.r, s.w.FollowMin, s.w.FollowMax))})
	}
	c.busy = true
	return &turn{group: c.id, index: c.turn, body: encodeChat(c.msgs, s.w.Output), private: c}
}

// done puts the answer into the history, or ends the conversation after
// its last turn or a failed one.
func (s *multiSource) done(t *turn, answer string, ok bool) {
	c, _ := t.private.(*conversation)
	if c == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.busy = false
	if ok && c.turn < s.w.Turns {
		c.msgs = append(c.msgs, chatMessage{Role: "assistant", Content: answer})
		return
	}
	if i := slices.Index(s.active, c); i >= 0 {
		s.active = slices.Delete(s.active, i, i+1)
	}
}

// arrivals are the times of a Poisson process of rate per second over
// [0, horizon) (exponential gaps), the first at 0.
func arrivals(r *rand.Rand, rate float64, horizon time.Duration) []time.Duration {
	var out []time.Duration
	for t := 0.0; t < horizon.Seconds(); t += r.ExpFloat64() / rate {
		out = append(out, time.Duration(math.Round(t*float64(time.Second))))
	}
	return out
}
