package simserver

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSimTokenize(t *testing.T) {
	cases := []struct {
		text   string
		pieces []string
	}{
		{"", nil},
		{"hello", []string{"hell", "o"}},
		{"hello world", []string{"hell", "o", " ", "worl", "d"}},
		{"a  b", []string{"a", "  ", "b"}},
		{"     x", []string{"    ", " ", "x"}},
		{"héllo", []string{"hél", "lo"}}, // é is two bytes: runes stay whole
		{"日本語です", []string{"日", "本", "語", "で", "す"}},
		{"<|user|>\nhi", []string{"<|us", "er|>", "\n", "hi"}},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			var want []uint64
			for _, p := range c.pieces {
				want = append(want, hashBytes(p))
			}
			got := tokenize(c.text)
			if len(want) == 0 {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, want, got)
		})
	}
}

// The tokens of a chat history are a prefix of the tokens of the same
// history with one more turn: what makes multi-turn chats hit the cache.
func TestSimTokenizePrefixStable(t *testing.T) {
	first := "<|system|>\nYou are terse.<|end|>\n<|user|>\nhello there<|end|>\n<|assistant|>\n"
	second := first + "Hi.<|end|>\n<|user|>\nand again<|end|>\n<|assistant|>\n"
	a, b := tokenize(first), tokenize(second)
	require.Less(t, len(a), len(b))
	assert.Equal(t, a, b[:len(a)])
	ha, hb := blockHashes(a, 16), blockHashes(b, 16)
	assert.Equal(t, ha, hb[:len(ha)], "so are the block hashes")
}

func TestSimBlockHashesChain(t *testing.T) {
	a := prompt("a", 64)
	b := append([]uint64{}, a...)
	b[0]++ // differs in block 0 only
	ha, hb := blockHashes(a, 16), blockHashes(b, 16)
	require.Len(t, ha, 4)
	for i := range ha {
		assert.NotEqual(t, ha[i], hb[i], "block %d's hash covers the blocks before it", i)
	}
	assert.Len(t, blockHashes(a[:47], 16), 2, "only full blocks")
}

func TestSimAnswer(t *testing.T) {
	long := answer(9, 50)
	assert.Equal(t, long[:10], answer(9, 10), "a shorter answer is a prefix of a longer one")
	assert.NotEqual(t, long, answer(10, 50))
	text := strings.Join(long, "")
	assert.True(t, unicode.IsUpper([]rune(text)[0]))
	assert.Len(t, strings.Fields(text), 50, "one word per token")
	for _, typical := range []int{1, 2, 64} {
		for seed := range uint64(200) {
			n := answerLength(seed, typical)
			assert.GreaterOrEqual(t, n, max(1, typical/2))
			assert.LessOrEqual(t, n, typical/2+typical)
		}
	}
	v := embedding(3, EmbeddingDims)
	var norm float64
	for _, x := range v {
		norm += float64(x) * float64(x)
	}
	assert.InDelta(t, 1, norm, 1e-4)
	assert.Equal(t, v, embedding(3, EmbeddingDims))
}

// FuzzSimTokenize checks the tokenizer on any text: it never loses a
// rune, and it is prefix-stable where the class changes.
func FuzzSimTokenize(f *testing.F) {
	f.Add("hello world", " again")
	f.Add("<|user|>\n", "hi")
	f.Add("héllo", "日本")
	f.Fuzz(func(t *testing.T, a, b string) {
		ta := tokenize(a)
		if utf8.ValidString(a) {
			assert.LessOrEqual(t, len(ta), len(a))
			if len(a) > 0 {
				assert.GreaterOrEqual(t, len(ta), (len(a)+maxTokenBytes-1)/maxTokenBytes)
			}
		}
		if a == "" || b == "" || !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		last, _ := utf8.DecodeLastRuneInString(a)
		first, _ := utf8.DecodeRuneInString(b)
		if unicode.IsSpace(last) != unicode.IsSpace(first) {
			tab := tokenize(a + b)
			require.GreaterOrEqual(t, len(tab), len(ta))
			assert.Equal(t, ta, tab[:len(ta)])
		}
	})
}
