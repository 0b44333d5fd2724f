package simserver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// arrival is one request of a simulation script.
type arrival struct {
	at     time.Duration
	tokens []uint64
	out    int
}

// trace is what one request saw, in simulated time.
type trace struct {
	arrival time.Duration
	times   []time.Duration // each token's time (an embedding: only its end)
	cached  int
	done    bool
}

func (tr *trace) deliver(ev event) {
	for len(tr.times) < max(ev.gen, 1) && (ev.gen > 0 || ev.done) {
		tr.times = append(tr.times, ev.at)
	}
	tr.cached, tr.done = ev.cached, ev.done
}

func (tr *trace) ttft() time.Duration { return tr.times[0] - tr.arrival }

// gaps are the times between tokens.
func (tr *trace) gaps() []time.Duration {
	var out []time.Duration
	for i := 1; i < len(tr.times); i++ {
		out = append(out, tr.times[i]-tr.times[i-1])
	}
	return out
}

// simulate runs a script to the end in simulated time, as the server's
// scheduler would without the sleeps: arrivals join between steps.
func simulate(t *testing.T, e *engine, script []arrival) []*trace {
	t.Helper()
	traces := make([]*trace, len(script))
	i := 0
	for steps := 0; i < len(script) || e.busy(); steps++ {
		require.Less(t, steps, 1_000_000, "the simulation does not end")
		for i < len(script) && (script[i].at <= e.now || !e.busy()) {
			a := script[i]
			traces[i] = &trace{arrival: a.at}
			_, err := e.add(a.tokens, a.out, FinishLength, traces[i], a.at)
			require.NoError(t, err)
			i++
		}
		_, evs := e.step()
		for _, ev := range evs {
			ev.s.sink.deliver(ev)
		}
	}
	for k, tr := range traces {
		require.True(t, tr.done, "request %d never finished", k)
	}
	return traces
}

// prompt is n distinct tokens, different for every tag.
func prompt(tag string, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = hashBytes(fmt.Sprintf("%s/%d", tag, i))
	}
	return out
}

func testProfile(adjust func(*Profile)) Profile {
	p := H100
	if adjust != nil {
		adjust(&p)
	}
	return p.withDefaults()
}

// Continuous batching: every decode step costs base + per-seq × batch, so
// a request's tokens come slower the more requests share the batch.
func TestSimEngineBatchingSlowsDecode(t *testing.T) {
	p := testProfile(nil)
	var last time.Duration
	for _, batch := range []int{1, 8, 64, 256} {
		t.Run(fmt.Sprint(batch), func(t *testing.T) {
			var script []arrival
			for i := range batch {
				script = append(script, arrival{tokens: prompt(fmt.Sprint(i), 32), out: 10})
			}
			traces := simulate(t, newEngine(p), script)
			want := p.DecodeBase + time.Duration(batch)*p.DecodePerSeq
			for _, tr := range traces {
				for _, g := range tr.gaps() {
					require.Equal(t, want, g, "inter-token time at batch %d", batch)
				}
			}
			assert.Greater(t, want, last, "a bigger batch decodes slower")
			last = want
		})
	}
}

// Prefill time is proportional to the prompt tokens not in the cache,
// chunked at the step's token budget.
func TestSimEnginePrefillProportional(t *testing.T) {
	p := testProfile(func(p *Profile) { p.MaxModelLen = 32768 })
	cases := []struct {
		prompt int
		want   time.Duration
	}{
		{1, p.stepTime(0, 1)},
		{100, p.stepTime(0, 100)},
		{1000, p.stepTime(0, 1000)},
		{4000, p.stepTime(0, 4000)},
		{8192, p.stepTime(0, 8192)},
		// over max_num_batched_tokens (8192): chunks, one step each
		{8192 + 8, p.stepTime(0, 8192) + p.stepTime(0, 8)},
		{3*8192 + 1, 3*p.stepTime(0, 8192) + p.stepTime(0, 1)},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.prompt), func(t *testing.T) {
			tr := simulate(t, newEngine(p), []arrival{{tokens: prompt("p", c.prompt), out: 2}})[0]
			assert.Equal(t, c.want, tr.ttft())
		})
	}
	one := simulate(t, newEngine(p), []arrival{{tokens: prompt("a", 1000), out: 1}})[0].ttft()
	two := simulate(t, newEngine(p), []arrival{{tokens: prompt("a", 2000), out: 1}})[0].ttft()
	assert.Equal(t, p.prefillTime(1000), two-one, "1000 more prompt tokens cost 1000/prefill_rate")
}

// A prompt that shares a prefix with an earlier one prefills only the
// rest: the second request's first token comes sooner, and the prefix
// cache counts the hit (in tokens, as vLLM does).
func TestSimEnginePrefixCache(t *testing.T) {
	p := testProfile(nil)
	base := prompt("system", 1000)
	cases := []struct {
		name     string
		second   []uint64
		wantHits int
	}{
		{"same prompt again: all but the block with the last token", base, 62 * 16},
		{"longer prompt with the same start", append(append([]uint64{}, base...), prompt("more", 200)...), 62 * 16},
		{"prompt that differs in the first token", append([]uint64{1}, base[1:]...), 0},
		{"prompt that shares one block", append(append([]uint64{}, base[:20]...), prompt("other", 980)...), 16},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(p)
			// the second arrives once the first is done
			tr := simulate(t, e, []arrival{{tokens: base, out: 3}, {at: time.Second, tokens: c.second, out: 3}})
			assert.Equal(t, 0, tr[0].cached)
			assert.Equal(t, c.wantHits, tr[1].cached)
			assert.Equal(t, p.stepTime(0, len(c.second)-c.wantHits), tr[1].ttft())
			if c.wantHits > 0 {
				assert.Less(t, tr[1].ttft(), tr[0].ttft()+p.prefillTime(len(c.second)-len(base)), "the cached prefix is not prefilled again")
			}
			assert.EqualValues(t, len(base)+len(c.second), e.m.prefixQueries)
			assert.EqualValues(t, c.wantHits, e.m.prefixHits)
		})
	}
}

// The prefix cache keeps at most its capacity of unreferenced blocks and
// evicts the least recently used.
func TestSimEnginePrefixCacheLRU(t *testing.T) {
	a, b, c := prompt("a", 5*16+1), prompt("b", 5*16+1), prompt("c", 5*16+1) // 5 full blocks each
	cases := []struct {
		name     string
		capacity int
		order    [][]uint64 // one after the other; the last one's hits are checked
		wantHits int
	}{
		{"room for all", 15, [][]uint64{a, b, c, a}, 5 * 16},
		{"oldest evicted", 10, [][]uint64{a, b, c, a}, 0},
		{"newest kept", 10, [][]uint64{a, b, c, c}, 5 * 16},
		{"use refreshes", 10, [][]uint64{a, b, a, c, a}, 5 * 16},
		{"use refreshes, other evicted", 10, [][]uint64{a, b, a, c, b}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(testProfile(func(p *Profile) { p.KVBlocks, p.PrefixCacheBlocks = 100, tc.capacity }))
			var script []arrival
			for i, pr := range tc.order {
				script = append(script, arrival{at: time.Duration(i) * time.Second, tokens: pr, out: 1})
			}
			tr := simulate(t, e, script)
			assert.Equal(t, tc.wantHits, tr[len(tr)-1].cached)
			assert.LessOrEqual(t, e.kv.cached(), tc.capacity)
		})
	}
}

// KV blocks bound the running batch: who does not fit waits, and is
// admitted as blocks free up; so does max_num_seqs.
func TestSimEngineKVCapacityQueues(t *testing.T) {
	cases := []struct {
		name                     string
		kvBlocks, maxSeqs, n     int
		wantRunning, wantWaiting int
	}{
		// each request: 100 prompt + 60 answer tokens = 10 blocks of 16
		{"all fit", 100, 256, 5, 5, 0},
		{"two fit", 20, 256, 5, 2, 3},
		{"one fits", 19, 256, 5, 1, 4},
		{"batch limit", 100, 3, 5, 3, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEngine(testProfile(func(p *Profile) { p.KVBlocks, p.MaxNumSeqs = c.kvBlocks, c.maxSeqs }))
			traces := make([]*trace, c.n)
			for i := range c.n {
				traces[i] = &trace{}
				_, err := e.add(prompt(fmt.Sprint(i), 100), 60, FinishLength, traces[i], 0)
				require.NoError(t, err)
			}
			e.step()
			snap := e.snapshot()
			assert.Equal(t, c.wantRunning, snap.running)
			assert.Equal(t, c.wantWaiting, snap.waiting)
			assert.Greater(t, snap.kvUsage, 0.0)
			assert.LessOrEqual(t, snap.kvUsage, 1.0)
			for e.busy() {
				_, evs := e.step()
				for _, ev := range evs {
					ev.s.sink.deliver(ev)
				}
				require.LessOrEqual(t, e.kv.held, c.kvBlocks, "blocks held beyond the cache")
			}
			if c.wantWaiting > 0 {
				// the queued started only after the first finished
				assert.Greater(t, traces[c.n-1].times[0], traces[0].times[len(traces[0].times)-1])
			}
			assert.Zero(t, e.snapshot().kvUsage, "everything released")
			assert.EqualValues(t, c.n, e.m.finished[FinishLength])
		})
	}
}

// A cancelled request leaves at once: its blocks go back and a waiting
// request takes them in the next step.
func TestSimEngineCancel(t *testing.T) {
	e := newEngine(testProfile(func(p *Profile) { p.KVBlocks = 10 })) // one request at a time
	first, err := e.add(prompt("a", 100), 60, FinishLength, nil, 0)
	require.NoError(t, err)
	second, err := e.add(prompt("b", 100), 60, FinishLength, nil, 0)
	require.NoError(t, err)
	third, err := e.add(prompt("c", 100), 60, FinishLength, nil, 0)
	require.NoError(t, err)
	e.step()
	require.Equal(t, 1, len(e.running))
	require.Equal(t, 2, len(e.waiting))

	assert.True(t, e.cancel(third), "a waiting request leaves the queue")
	assert.Equal(t, 1, len(e.waiting))
	assert.True(t, e.cancel(first), "a running request leaves the batch")
	assert.Empty(t, e.running)
	assert.Zero(t, e.kv.held, "its blocks are free")
	assert.False(t, e.cancel(first), "cancel twice")
	e.step()
	assert.Equal(t, []*seq{second}, e.running, "the waiting request took the room")
	assert.EqualValues(t, 2, e.m.finished[FinishAbort])
}

// Requests that could never run are refused when they come.
func TestSimEngineRefusesImpossible(t *testing.T) {
	e := newEngine(testProfile(func(p *Profile) { p.KVBlocks, p.MaxModelLen = 4, 100 }))
	for _, c := range []struct {
		prompt, out int
		want        string
	}{
		{0, 5, "empty"},
		{90, 20, "maximum context length is 100"},
		{60, 10, "needs 5 KV blocks"},
	} {
		_, err := e.add(prompt("x", c.prompt), c.out, FinishLength, nil, 0)
		require.Error(t, err)
		assert.Contains(t, err.Error(), c.want)
	}
	_, err := e.add(prompt("x", 60), 4, FinishLength, nil, 0)
	assert.NoError(t, err)
}

// Same seed, same script: the same answers and the same simulated
// timings; another seed changes the answers.
func TestSimEngineDeterministic(t *testing.T) {
	run := func(seed uint64) (texts []string, times [][]time.Duration) {
		s, err := New(Config{Seed: seed, Profile: A10})
		require.NoError(t, err)
		r := rng{s: 42} // the script itself is fixed
		var script []arrival
		for i := range 40 {
			body := fmt.Sprintf(`{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"question %d of %d"}]}`, r.intn(8), i)
			req, err := decodeGenerate(kindChat, []byte(body))
			require.NoError(t, err)
			plan, err := s.plan(req)
			require.NoError(t, err)
			texts = append(texts, strings.Join(plan.tokens, ""))
			script = append(script, arrival{at: time.Duration(r.intn(2000)) * time.Millisecond, tokens: req.tokens, out: len(plan.tokens)})
		}
		sortByArrival(script)
		for _, tr := range simulate(t, newEngine(s.cfg.Profile), script) {
			times = append(times, tr.times)
		}
		return texts, times
	}
	texts1, times1 := run(7)
	texts2, times2 := run(7)
	assert.Equal(t, texts1, texts2)
	assert.Equal(t, times1, times2)
	texts3, _ := run(8)
	assert.NotEqual(t, texts1, texts3)
}

func sortByArrival(script []arrival) {
	for i := 1; i < len(script); i++ {
		for j := i; j > 0 && script[j].at < script[j-1].at; j-- {
			script[j], script[j-1] = script[j-1], script[j]
		}
	}
}
