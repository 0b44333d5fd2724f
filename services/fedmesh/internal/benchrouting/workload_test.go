package benchrouting

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
)

func decodeChat(t *testing.T, body []byte) chatBody {
	t.Helper()
	var c chatBody
	require.NoError(t, json.Unmarshal(body, &c))
	return c
}

// words counts the words of a text made by text().
func words(s string) int { return len(strings.Fields(s)) }

// text is n tokens as simserver counts them: checked against a real
// simserver's usage.prompt_tokens.
func TestRoutingTextTokens(t *testing.T) {
	srv, err := simserver.Start(context.Background(), simserver.Config{Addr: "127.0.0.1:0", TimeScale: 1000})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	r := newRand(7, 0)
	for _, n := range []int{1, 2, 3, 50, 51, 4000} {
		s := text(r, n)
		assert.Equal(t, (n+1)/2, words(s), "n=%d", n)
		body, _ := json.Marshal(map[string]any{"prompt": s, "max_tokens": 1})
		resp, err := http.Post(srv.URL()+"/v1/completions", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		var out struct {
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		resp.Body.Close()
		assert.Equal(t, n, out.Usage.PromptTokens, "text(%d) as simserver tokenizes it", n)
	}
}

func TestRoutingSharedPrefixShape(t *testing.T) {
	w := SharedPrefix{Groups: 4, SystemTokens: 301, QuestionMin: 11, QuestionMax: 21, Output: 7}
	gen := func(seed uint64, n int) []*turn {
		src := w.source(seed)
		out := make([]*turn, n)
		for i := range out {
			out[i] = src.next()
		}
		return out
	}
	a, b, other := gen(5, 200), gen(5, 200), gen(6, 200)
	system := map[int]string{}
	seen := map[int]int{}
	for i, tr := range a {
		assert.Equal(t, tr.body, b[i].body, "same seed, same request %d", i)
		c := decodeChat(t, tr.body)
		require.Len(t, c.Messages, 2)
		assert.Equal(t, "system", c.Messages[0].Role)
		assert.Equal(t, "user", c.Messages[1].Role)
		assert.Equal(t, 7, c.MaxTokens)
		assert.True(t, c.IgnoreEOS)
		assert.Equal(t, (301+1)/2, words(c.Messages[0].Content), "system prompt of 301 tokens")
		q := 2*words(c.Messages[1].Content) - 1
		assert.True(t, q >= 11-1 && q <= 21, "question of %d tokens", q) // an even length ends in a space
		require.True(t, tr.group >= 0 && tr.group < 4)
		if s, ok := system[tr.group]; ok {
			assert.Equal(t, s, c.Messages[0].Content, "one system prompt per group")
		}
		system[tr.group] = c.Messages[0].Content
		seen[tr.group]++
		// the body starts with the system prompt: the router's prefix
		// index sees the same leading bytes for the same group
		assert.True(t, bytes.HasPrefix(tr.body, []byte(`{"messages":[{"role":"system","content":"`+c.Messages[0].Content[:20])))
	}
	assert.Len(t, seen, 4, "every group drawn")
	for g, n := range seen {
		assert.InDelta(t, 50, n, 25, "group %d drawn about uniformly", g)
	}
	assert.Len(t, uniqueStrings(system), 4, "groups differ")
	assert.NotEqual(t, a[0].body, other[0].body, "another seed, other prompts")
}

func uniqueStrings(m map[int]string) map[string]bool {
	out := map[string]bool{}
	for _, v := range m {
		out[v] = true
	}
	return out
}

// Each zero field of a shared_prefix shape takes its default, so --groups
// alone changes only the groups.
func TestRoutingSharedPrefixDefaults(t *testing.T) {
	d := DefaultSharedPrefix
	for name, c := range map[string]struct{ in, want SharedPrefix }{
		"zero":        {SharedPrefix{}, d},
		"groups only": {SharedPrefix{Groups: 8}, SharedPrefix{8, d.SystemTokens, d.QuestionMin, d.QuestionMax, d.Output}},
		"all set":     {SharedPrefix{3, 10, 1, 2, 4}, SharedPrefix{3, 10, 1, 2, 4}},
		"question max only keeps its min at 0, refused": {SharedPrefix{QuestionMax: 9}, SharedPrefix{d.Groups, d.SystemTokens, 0, 9, d.Output}},
	} {
		got := c.in.withDefaults()
		assert.Equal(t, c.want, got, name)
	}
	assert.Error(t, SharedPrefix{QuestionMax: 9}.withDefaults().validate())
	assert.Error(t, SharedPrefix{Groups: -2}.withDefaults().validate())
}

func TestRoutingNoSharingShape(t *testing.T) {
	w := NoSharing{PromptMin: 100, PromptMax: 140, Output: 5}
	src := w.source(3)
	heads := map[string]bool{}
	for range 100 {
		tr := src.next()
		c := decodeChat(t, tr.body)
		require.Len(t, c.Messages, 1)
		n := 2*words(c.Messages[0].Content) - 1
		assert.True(t, n >= 99 && n <= 140, "prompt of %d tokens", n)
		assert.Equal(t, -1, tr.group)
		heads[string(tr.body[:128])] = true
	}
	assert.Len(t, heads, 100, "no two requests share their first 128-byte block")
	assert.Equal(t, w.source(3).next().body, w.source(3).next().body, "deterministic")
}

func TestRoutingMultiTurnShape(t *testing.T) {
	w := MultiTurn{Conversations: 3, Turns: 3, FirstTokens: 41, FollowMin: 5, FollowMax: 9, Output: 4}
	src := w.source(9)

	// the first Conversations arrivals open as many conversations
	first := []*turn{src.next(), src.next(), src.next()}
	ids := map[int]bool{}
	for _, tr := range first {
		assert.Equal(t, 1, tr.index)
		c := decodeChat(t, tr.body)
		require.Len(t, c.Messages, 1)
		assert.Equal(t, 21, words(c.Messages[0].Content), "a 41-token first message")
		ids[tr.group] = true
	}
	assert.Len(t, ids, 3)
	// every one waits for its answer: the next arrival opens a fourth
	fourth := src.next()
	assert.False(t, ids[fourth.group])
	assert.Equal(t, 1, fourth.index)

	// an answered conversation comes back with its history and a follow-up
	src.done(first[0], "Answer one.", true)
	src.done(fourth, "", false) // a failed turn ends its conversation
	next := src.next()
	require.Equal(t, first[0].group, next.group, "the only idle conversation")
	assert.Equal(t, 2, next.index)
	prev, cur := decodeChat(t, first[0].body), decodeChat(t, next.body)
	require.Len(t, cur.Messages, 3)
	assert.Equal(t, prev.Messages, cur.Messages[:1])
	assert.Equal(t, chatMessage{Role: "assistant", Content: "Answer one."}, cur.Messages[1])
	assert.Equal(t, "user", cur.Messages[2].Role)
	// the context grows: the earlier body, less its closing, starts the new one
	assert.True(t, bytes.HasPrefix(next.body, first[0].body[:bytes.LastIndex(first[0].body, []byte("]"))]))
	assert.Greater(t, len(next.body), len(first[0].body))

	src.done(next, "Answer two.", true)
	third := src.next()
	require.Equal(t, next.group, third.group)
	assert.Equal(t, 3, third.index)
	assert.Len(t, decodeChat(t, third.body).Messages, 5)
	// after its last turn the conversation is gone; a new one takes its place
	src.done(third, "Answer three.", true)
	for _, tr := range first[1:] {
		src.done(tr, "x", true)
	}
	for range 10 {
		tr := src.next()
		assert.NotEqual(t, third.group, tr.group, "a finished conversation never comes back")
		src.done(tr, "y", true)
	}
}

func TestRoutingMeanPrompt(t *testing.T) {
	assert.InDelta(t, 4000+125+3*templateTokens, DefaultSharedPrefix.meanPrompt(), 0.01)
	assert.InDelta(t, 2250+2*templateTokens, DefaultNoSharing.meanPrompt(), 0.01)
	// turns 1…5 carry 0…4 earlier turns: 2 on average, each a follow-up
	// (150 + template) and an answer (32 + template)
	assert.InDelta(t, 1500+2*templateTokens+2*(150+templateTokens+32+templateTokens), DefaultMultiTurn.meanPrompt(), 0.01)
}

func TestRoutingArrivals(t *testing.T) {
	a := arrivals(newRand(1, 7), 50, 200*time.Second)
	assert.Equal(t, a, arrivals(newRand(1, 7), 50, 200*time.Second), "deterministic")
	assert.NotEqual(t, a[1:10], arrivals(newRand(2, 7), 50, 200*time.Second)[1:10])
	require.NotEmpty(t, a)
	assert.Zero(t, a[0])
	assert.InDelta(t, 10000, len(a), 300, "rate × horizon arrivals")
	var gaps []float64
	for i := 1; i < len(a); i++ {
		require.GreaterOrEqual(t, a[i], a[i-1])
		gaps = append(gaps, (a[i] - a[i-1]).Seconds())
	}
	assert.Less(t, a[len(a)-1], 200*time.Second)
	// exponential gaps: mean 1/rate, and as many above the mean as e^-1 says
	var sum float64
	above := 0
	for _, g := range gaps {
		sum += g
		if g > 0.02 {
			above++
		}
	}
	assert.InDelta(t, 0.02, sum/float64(len(gaps)), 0.001)
	assert.InDelta(t, math.Exp(-1), float64(above)/float64(len(gaps)), 0.02)
}

func TestRoutingParseFleet(t *testing.T) {
	f, err := ParseFleet(DefaultFleet)
	require.NoError(t, err)
	require.Len(t, f, 8)
	assert.Equal(t, []string{"h100-1", "h100-2", "h100-3", "a10-1", "a10-2", "a10-3", "cpu-1", "cpu-2"}, nodeIDs(f))
	assert.Equal(t, []string{"h100", "a10", "cpu"}, profileNames(f))
	f, err = ParseFleet(" H100 , a10")
	require.NoError(t, err)
	assert.Equal(t, []string{"h100-1", "a10-1"}, nodeIDs(f))
	for _, bad := range []string{"", "tpu", "0xh100", "3xtpu", "65xcpu"} {
		_, err := ParseFleet(bad)
		assert.Error(t, err, bad)
	}
}

func TestRoutingCapacity(t *testing.T) {
	h100 := fleetDefaults["h100"]
	// 4000 prompt tokens at 10 000/s, 32 answer tokens: batch 64 (the
	// KV pool holds 65 such requests, 262 144 / 4 032; max_concurrency
	// caps it), 0.4 + 32 × 0.0001 + 32 × 0.0119 / 64 s
	want := 1 / (0.4 + 32*0.0001 + 32*0.0119/64)
	assert.InDelta(t, want, capacity(h100, 4000, 32), 1e-9)
	// the cpu's KV pool (16 384 tokens) holds 4 such requests, its
	// max_num_seqs 4 too
	cpu := fleetDefaults["cpu"]
	assert.InDelta(t, 1/(4000/667.0+32*0.0015+32*0.1785/4), capacity(cpu, 4000, 32), 1e-9)
	a10 := fleetDefaults["a10"]
	assert.Greater(t, capacity(h100, 2000, 32), capacity(a10, 2000, 32))
	assert.Greater(t, capacity(a10, 2000, 32), capacity(cpu, 2000, 32))
	f, _ := ParseFleet("2xh100,a10")
	assert.InDelta(t, 2*capacity(h100, DefaultNoSharing.meanPrompt(), 32)+capacity(a10, DefaultNoSharing.meanPrompt(), 32),
		fleetCapacity(f, DefaultNoSharing), 1e-9)
	assert.Equal(t, 4096, cacheBlocks(simserver.H100, DefaultCacheFraction), "16 of the 64 system prompts (250 blocks each)")
	assert.Equal(t, 1, cacheBlocks(simserver.Profile{KVBlocks: 4}, 0.01), "at least one block")
}
