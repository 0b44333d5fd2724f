package simserver

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxTokenBytes is the longest token the tokenizer makes.
const maxTokenBytes = 4

// tokenize is a cheap deterministic tokenizer: the text splits into runs
// of spaces and runs of other characters, and each run into pieces of at
// most maxTokenBytes bytes (on rune boundaries); a token's id is the hash
// of its bytes. It is prefix-stable at a change of class: the tokens of
// a + b start with the tokens of a when a's last rune and b's first are
// not both spaces or both non-spaces, which is what makes a chat history
// shared by two prompts hit the prefix cache.
func tokenize(text string) []uint64 {
	out := make([]uint64, 0, len(text)/3+1)
	for len(text) > 0 {
		space := isSpace(text)
		run := len(text)
		for i, r := range text {
			if unicode.IsSpace(r) != space {
				run = i
				break
			}
		}
		for piece := text[:run]; len(piece) > 0; {
			n := min(len(piece), maxTokenBytes)
			for n > 0 && n < len(piece) && !utf8.RuneStart(piece[n]) {
				n-- // keep runes whole
			}
			if n == 0 {
				_, n = utf8.DecodeRuneInString(piece)
			}
			out = append(out, hashBytes(piece[:n]))
			piece = piece[n:]
		}
		text = text[run:]
	}
	return out
}

func isSpace(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}

// hashBytes is FNV-1a, 64 bits.
func hashBytes(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix combines two words into a well-spread one (splitmix64 finaliser).
func mix(a, b uint64) uint64 {
	z := a ^ (b + 0x9e3779b97f4a7c15 + (a << 6) + (a >> 2))
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// blockHashes chains a hash over each full block of tokens, as vLLM's
// prefix cache does: block i's hash covers every token before its end, so
// two prompts share block i only if they agree on all of it and what came
// before.
func blockHashes(tokens []uint64, blockSize int) []uint64 {
	n := len(tokens) / blockSize
	out := make([]uint64, n)
	h := uint64(0x736d6d6573686564) // the root: no parent block
	for i := range n {
		for _, t := range tokens[i*blockSize : (i+1)*blockSize] {
			h = mix(h, t)
		}
		out[i] = h
	}
	return out
}

// promptHash is one hash of all tokens: the answer's seed.
func promptHash(tokens []uint64) uint64 {
	h := uint64(len(tokens))
	for _, t := range tokens {
		h = mix(h, t)
	}
	return h
}

// rng is splitmix64: small, fast, and the same sequence everywhere.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

// words the answers are made of.
var words = strings.Fields(`the a of and to in is that it for on with as was at by this be from or
an are which but not have has had one all were when we there can their been more if will
would into time its two than only new some could these may first any like then now such
over also most after made many where well much before through back years way our should
system data model request node token cache batch queue prompt answer region latency stream
server network cluster memory block layer prefix decode prefill kernel tensor weight graph
signal route policy mesh health score worker engine slot window budget sample vector every
small large fast slow early late other same each under between around during without again
river mountain garden window letter winter summer morning evening city harbor market bridge
light shadow stone glass paper silver copper wooden quiet bright gentle simple careful open`)

// answer is a request's answer, one string per token: deterministic words
// drawn from seed (the server's seed mixed with the prompt).
func answer(seed uint64, n int) []string {
	r := rng{s: seed}
	out := make([]string, n)
	capital := true
	for i := range n {
		w := words[r.intn(len(words))]
		if capital {
			w = strings.ToUpper(w[:1]) + w[1:]
			capital = false
		}
		switch r.intn(12) {
		case 0:
			w += "."
			capital = true
		case 1:
			w += ","
		}
		if i > 0 {
			w = " " + w
		}
		out[i] = w
	}
	return out
}

// answerLength is how many tokens an answer has before its model would
// stop on its own: typical/2 … 3·typical/2.
func answerLength(seed uint64, typical int) int {
	r := rng{s: mix(seed, 0x6c656e677468)}
	return max(1, typical/2+r.intn(typical+1))
}

// embedding is a unit vector of dims floats drawn from seed.
func embedding(seed uint64, dims int) []float32 {
	r := rng{s: seed}
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		// the sum of uniforms is near normal: directions spread evenly
		x := float64(r.next()>>11)/(1<<53) + float64(r.next()>>11)/(1<<53) - 1
		v[i] = float32(x)
		norm += x * x
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		v[0], norm = 1, 1
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / norm)
	}
	return v
}
