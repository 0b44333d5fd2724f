package synthetic

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func collect(t *testing.T, b *Backend, req backend.Call) ([]string, backend.Result, error) {
	t.Helper()
	var out []string
	res, err := b.Generate(context.Background(), req, func(c []byte) error {
		out = append(out, string(c))
		return nil
	})
	return out, res, err
}

func TestTokens(t *testing.T) {
	gen := backend.Call{Capability: wire.CapGenerate, Model: "m1", Body: []byte("hello")}
	cases := []struct {
		name  string
		cfg   Config
		req   backend.Call
		count int
		bytes int
	}{
		{"default", Config{}, gen, DefaultTokens, 0},
		{"tokens", Config{Tokens: 5}, gen, 5, 0},
		{"by model", Config{Tokens: 5, TokensByModel: map[string]int{"m1": 9}}, gen, 9, 0},
		{"other model", Config{Tokens: 5, TokensByModel: map[string]int{"m2": 9}}, gen, 5, 0},
		{"token bytes", Config{Tokens: 20, TokenBytes: 16}, gen, 20, 16},
		{"short token bytes", Config{Tokens: 20, TokenBytes: 1}, gen, 20, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.cfg)
			out, res, err := collect(t, b, tc.req)
			require.NoError(t, err)
			assert.Len(t, out, tc.count)
			assert.Equal(t, tc.count, res.Tokens)
			for _, tok := range out {
				require.NotEmpty(t, tok)
				if tc.bytes > 0 {
					assert.Len(t, tok, tc.bytes)
				}
			}
			again, _, _ := collect(t, b, tc.req)
			assert.Equal(t, out, again, "deterministic")
		})
	}
	a, _, _ := collect(t, New(Config{}), gen)
	other := gen
	other.Body = []byte("something else")
	c, _, _ := collect(t, New(Config{}), other)
	assert.NotEqual(t, strings.Join(a, ""), strings.Join(c, ""), "output depends on the input")
}

func TestFailureRate(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		fails int
	}{{0, 0}, {1, 10}, {0.5, 5}, {0.3, 3}, {-1, 0}, {7, 10}} {
		b := New(Config{FailureRate: tc.rate, Tokens: 1})
		n := 0
		for i := 0; i < 10; i++ {
			_, _, err := collect(t, b, backend.Call{Capability: wire.CapGenerate})
			if err != nil {
				var we *wire.Error
				require.True(t, errors.As(err, &we))
				assert.Equal(t, wire.CodeInternal, we.Code)
				n++
			}
		}
		assert.Equal(t, tc.fails, n, "rate %v", tc.rate)
	}
}

func TestDelaysAndCancel(t *testing.T) {
	b := New(Config{TTFT: 30 * time.Millisecond, TokenDelay: 10 * time.Millisecond, Tokens: 3})
	t0 := time.Now()
	_, _, err := collect(t, b, backend.Call{Capability: wire.CapGenerate})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(t0), 50*time.Millisecond)

	slow := New(Config{TokenDelay: time.Hour, Tokens: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	n := 0
	res, err := slow.Generate(ctx, backend.Call{Capability: wire.CapGenerate}, func([]byte) error { n++; return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 1, n)
	assert.Equal(t, 1, res.Tokens)

	stop := errors.New("client gone")
	_, err = New(Config{}).Generate(context.Background(), backend.Call{Capability: wire.CapGenerate}, func([]byte) error { return stop })
	require.ErrorIs(t, err, stop, "an emit error ends the request")
}

func TestOtherCapabilities(t *testing.T) {
	b := New(Config{Tokens: 4})
	out, _, err := collect(t, b, backend.Call{Capability: wire.CapEmbed, Model: "e", Body: []byte("a b")})
	require.NoError(t, err)
	require.Len(t, out, 1)
	var emb struct {
		Object string `json:"object"`
		Data   []struct {
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(out[0]), &emb))
	assert.Equal(t, "list", emb.Object)
	assert.Len(t, emb.Data[0].Embedding, embedDims)

	out, res, err := collect(t, b, backend.Call{Capability: wire.CapSynthesize, Body: []byte("x")})
	require.NoError(t, err)
	assert.Equal(t, "audio/wav", res.ContentType)
	assert.True(t, strings.HasPrefix(out[0], "RIFF"))

	out, _, err = collect(t, b, backend.Call{Capability: wire.CapTranscribe, Body: []byte("audio")})
	require.NoError(t, err)
	var tr struct{ Text string }
	require.NoError(t, json.Unmarshal([]byte(out[0]), &tr))
	assert.NotEmpty(t, tr.Text)

	out, _, err = collect(t, b, backend.Call{Capability: wire.CapImagegen, Body: []byte("cat")})
	require.NoError(t, err)
	assert.Contains(t, out[0], "b64_json")
}

// BenchmarkGenerate: with no delays the backend must cost next to nothing
// (the mesh benchmarks measure fedmesh, not the stand-in).
func BenchmarkGenerate(b *testing.B) {
	be := New(Config{Tokens: 256, TokenBytes: 16})
	req := backend.Call{Capability: wire.CapGenerate, Model: "m", Body: []byte("bench")}
	emit := func([]byte) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		_, _ = be.Generate(context.Background(), req, emit)
	}
}

// Two synthetic nodes with different lengths and delays give the same tokens
// at the same positions: what makes a stream resumable on another node.
func TestResumableStreamsAgreeOnEveryPosition(t *testing.T) {
	a := New(Config{Tokens: 12})
	b := New(Config{Tokens: 20, TTFT: time.Millisecond})
	require.True(t, a.Resumable())
	require.True(t, b.Resumable())
	assert.False(t, New(Config{TokenBytes: 16}).Resumable(), "padded tokens depend on the node's config")
	call := backend.Call{RequestID: "r", Capability: wire.CapGenerate, Model: "m", Body: []byte("same prompt"), Stream: true}
	collect := func(be *Backend) []string {
		var out []string
		_, err := be.Generate(context.Background(), call, func(c []byte) error { out = append(out, string(c)); return nil })
		require.NoError(t, err)
		return out
	}
	short, long := collect(a), collect(b)
	require.Len(t, short, 12)
	require.Len(t, long, 20)
	assert.Equal(t, short, long[:12])
}

// TokensMax spreads answer lengths over requests, deterministically and the
// same on every node configured alike; without it nothing changes.
func TestTokensMaxLengthPerRequest(t *testing.T) {
	a, b := New(Config{Tokens: 20, TokensMax: 100}), New(Config{Tokens: 20, TokensMax: 100, TokenDelay: time.Microsecond})
	lengths := map[int]bool{}
	for i := range 40 {
		call := backend.Call{Capability: wire.CapGenerate, Model: "m", Body: []byte("prompt " + strconv.Itoa(i))}
		ra, err := a.Generate(context.Background(), call, func([]byte) error { return nil })
		require.NoError(t, err)
		rb, err := b.Generate(context.Background(), call, func([]byte) error { return nil })
		require.NoError(t, err)
		assert.Equal(t, ra.Tokens, rb.Tokens, "alike nodes, same length")
		assert.GreaterOrEqual(t, ra.Tokens, 20)
		assert.LessOrEqual(t, ra.Tokens, 100)
		lengths[ra.Tokens] = true
	}
	assert.Greater(t, len(lengths), 10, "lengths vary over requests")
	fixed, err := New(Config{Tokens: 7}).Generate(context.Background(), backend.Call{Capability: wire.CapGenerate, Body: []byte("x")}, func([]byte) error { return nil })
	require.NoError(t, err)
	assert.Equal(t, 7, fixed.Tokens)
}

// A continuation emits only the tokens after the ones the client has, and
// refuses text that is not this answer's beginning.
func TestContinue(t *testing.T) {
	b := New(Config{Tokens: 10})
	require.True(t, b.Continues())
	assert.False(t, New(Config{TokenBytes: 4}).Continues())
	call := backend.Call{Capability: wire.CapGenerate, Model: "m", Body: []byte("prompt"), Stream: true}
	whole, _, err := collect(t, b, call)
	require.NoError(t, err)
	cases := []struct {
		name    string
		seq     int
		text    string
		want    []string
		tokens  int
		errCode int
	}{
		{name: "from 4", seq: 4, text: strings.Join(whole[:4], ""), want: whole[4:], tokens: 6},
		{name: "from 1", seq: 1, text: whole[0], want: whole[1:], tokens: 9},
		{name: "all delivered already", seq: 10, text: strings.Join(whole, ""), tokens: 0},
		{name: "past the end", seq: 12, text: strings.Join(whole, ""), tokens: 0},
		{name: "wrong text", seq: 2, text: "something else", errCode: wire.CodeBadRequest},
		{name: "text of another length", seq: 3, text: strings.Join(whole[:2], ""), errCode: wire.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := call
			c.Continue = &backend.Continuation{Seq: tc.seq, Text: []byte(tc.text)}
			got, res, err := collect(t, b, c)
			if tc.errCode != 0 {
				var we *wire.Error
				require.True(t, errors.As(err, &we), "got %v", err)
				assert.Equal(t, tc.errCode, we.Code)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.tokens, res.Tokens)
		})
	}
	c := backend.Call{Capability: wire.CapEmbed, Model: "m", Body: []byte("x"), Continue: &backend.Continuation{Seq: 1}}
	_, _, err = collect(t, b, c)
	var we *wire.Error
	require.True(t, errors.As(err, &we))
	assert.Equal(t, wire.CodeBadRequest, we.Code)
}

func TestImmediate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want bool
	}{
		{"no delays", Config{Tokens: 8}, true},
		{"defaults", Config{}, true},
		{"ttft", Config{TTFT: time.Millisecond}, false},
		{"token delay", Config{TokenDelay: time.Millisecond}, false},
		{"at the token bound", Config{Tokens: ImmediateMaxTokens}, true},
		{"over the token bound", Config{Tokens: ImmediateMaxTokens + 1}, false},
		{"tokens_max over the bound", Config{Tokens: 4, TokensMax: ImmediateMaxTokens + 1}, false},
		{"a model over the bound", Config{Tokens: 4, TokensByModel: map[string]int{"m": ImmediateMaxTokens + 1}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := New(c.cfg).Immediate(); got != c.want {
				t.Fatalf("Immediate() = %v, want %v", got, c.want)
			}
			if got := backend.AnswersAtOnce(New(c.cfg)); got != c.want {
				t.Fatalf("backend.AnswersAtOnce = %v, want %v", got, c.want)
			}
		})
	}
}
