package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestContinues(t *testing.T) {
	for _, on := range []bool{false, true} {
		b, err := New(Config{BaseURL: "http://h:1", Continue: on})
		require.NoError(t, err)
		assert.Equal(t, on, backend.Continues(b))
	}
}

// soFar is the text another node had already sent when it was lost.
const soFar = "Once upon a time, \"there\" <was> "

// A continuation carries the text so far to the server in the form it
// continues (a final assistant message with continue_final_message for
// chat, the prompt's end for completions) and emits only what the server
// adds.
func TestContinueARequest(t *testing.T) {
	cont := &backend.Continuation{Seq: 7, Text: []byte(soFar)}
	cases := []struct {
		name        string
		completions bool // Config.Completions
		call        backend.Call
		path        string
		check       func(t *testing.T, body map[string]any)
	}{
		{name: "plain text chat", call: backend.Call{Body: []byte("tell a story")}, path: "/v1/chat/completions",
			check: func(t *testing.T, body map[string]any) {
				assert.Equal(t, []any{
					map[string]any{"role": "user", "content": "tell a story"},
					map[string]any{"role": "assistant", "content": soFar},
				}, body["messages"])
				assert.Equal(t, true, body["continue_final_message"])
				assert.Equal(t, false, body["add_generation_prompt"])
			}},
		{name: "chat body", call: backend.Call{Body: []byte(`{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"story"}],"temperature":0.5,"echo":true}`)},
			path: "/v1/chat/completions", check: func(t *testing.T, body map[string]any) {
				msgs := body["messages"].([]any)
				require.Len(t, msgs, 3)
				assert.Equal(t, map[string]any{"role": "system", "content": "be brief"}, msgs[0], "earlier messages untouched")
				assert.Equal(t, map[string]any{"role": "assistant", "content": soFar}, msgs[2])
				assert.Equal(t, true, body["continue_final_message"])
				assert.Equal(t, false, body["add_generation_prompt"])
				assert.NotContains(t, body, "echo", "echo would send the text so far again")
				assert.Equal(t, 0.5, body["temperature"])
			}},
		{name: "chat that prefilled the answer itself", call: backend.Call{Body: []byte(`{"messages":[{"role":"user","content":"story"},{"role":"assistant","content":"Title: "}],"continue_final_message":true,"add_generation_prompt":false}`)},
			path: "/v1/chat/completions", check: func(t *testing.T, body map[string]any) {
				msgs := body["messages"].([]any)
				require.Len(t, msgs, 2, "the prefill is continued, not a second assistant message")
				assert.Equal(t, map[string]any{"role": "assistant", "content": "Title: " + soFar}, msgs[1])
				assert.Equal(t, true, body["continue_final_message"])
			}},
		{name: "chat ending in an assistant turn it does not continue", call: backend.Call{Body: []byte(`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}`)},
			path: "/v1/chat/completions", check: func(t *testing.T, body map[string]any) {
				msgs := body["messages"].([]any)
				require.Len(t, msgs, 4)
				assert.Equal(t, map[string]any{"role": "assistant", "content": soFar}, msgs[3])
			}},
		{name: "plain text to completions", completions: true, call: backend.Call{Body: []byte("tell a story: ")}, path: "/v1/completions",
			check: func(t *testing.T, body map[string]any) {
				assert.Equal(t, "tell a story: "+soFar, body["prompt"])
				assert.NotContains(t, body, "continue_final_message", "not a chat request")
			}},
		{name: "completions body", call: backend.Call{Capability: wire.CapCode, Body: []byte(`{"prompt":"def f(","echo":true,"max_tokens":9}`)}, path: "/v1/completions",
			check: func(t *testing.T, body map[string]any) {
				assert.Equal(t, "def f("+soFar, body["prompt"])
				assert.NotContains(t, body, "echo")
				assert.Equal(t, 9.0, body["max_tokens"])
			}},
		{name: "completions prompt list of one", call: backend.Call{Body: []byte(`{"prompt":["p: "],"n":1}`)}, path: "/v1/completions",
			check: func(t *testing.T, body map[string]any) {
				assert.Equal(t, []any{"p: " + soFar}, body["prompt"])
			}},
	}
	for _, tc := range cases {
		for _, stream := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s stream=%v", tc.name, stream), func(t *testing.T) {
				f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
					if !stream {
						w.Header().Set("Content-Type", "application/json")
						fmt.Fprint(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"there was a node."},"text":"","finish_reason":"stop"}]}`)
						return
					}
					sseHeaders(w)
					for _, s := range []string{"there ", "was ", "a node."} {
						delta(w, s)
					}
					finish(w, false)
				})
				b := f.backend(func(c *Config) { c.Continue, c.Completions = true, tc.completions })
				call := tc.call
				call.Stream, call.Continue = stream, cont
				c := newCollected()
				res, err := gen(b, context.Background(), call, c)
				require.NoError(t, err)
				assert.Equal(t, "there was a node.", strings.Join(c.all(), ""), "only the continuation is emitted")
				assert.Positive(t, res.Tokens)
				s := f.seen()
				assert.Equal(t, tc.path, s.path)
				assert.Equal(t, stream, s.body["stream"])
				assert.Equal(t, "meta-llama/Llama-3-8B", s.body["model"])
				tc.check(t, s.body)
			})
		}
	}
}

// A continuation with no text so far (the lost node sent nothing) is the
// plain request.
func TestContinueFromNothing(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		delta(w, "all of it")
		finish(w, false)
	})
	b := f.backend(func(c *Config) { c.Continue = true })
	c := newCollected()
	_, err := gen(b, context.Background(), backend.Call{Body: []byte("q"), Stream: true, Continue: &backend.Continuation{}}, c)
	require.NoError(t, err)
	assert.Equal(t, []string{"all of it"}, c.all())
	s := f.seen()
	assert.Equal(t, []any{map[string]any{"role": "user", "content": "q"}}, s.body["messages"])
	assert.NotContains(t, s.body, "continue_final_message")
}

func TestCannotContinue(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) { t.Error("no request must reach the server") })
	on := f.backend(func(c *Config) { c.Continue = true })
	off := f.backend()
	cont := &backend.Continuation{Seq: 2, Text: []byte("so far")}
	cases := []struct {
		name string
		b    *Backend
		call backend.Call
		says string
	}{
		{"embed", on, backend.Call{Capability: wire.CapEmbed, Body: []byte("x")}, "cannot continue a embed answer"},
		{"imagegen", on, backend.Call{Capability: wire.CapImagegen, Body: []byte("x")}, "cannot continue a imagegen answer"},
		{"transcribe", on, backend.Call{Capability: wire.CapTranscribe, Body: []byte("RIFF")}, "cannot continue a transcribe answer"},
		{"synthesize", on, backend.Call{Capability: wire.CapSynthesize, Body: []byte("x")}, "cannot continue a synthesize answer"},
		{"server cannot", off, backend.Call{Body: []byte("x")}, "backend.continue"},
		{"several prompts", on, backend.Call{Body: []byte(`{"prompt":["a","b"]}`)}, "one string"},
		{"token prompt", on, backend.Call{Body: []byte(`{"prompt":[1,2,3]}`)}, "one string"},
		{"n choices", on, backend.Call{Body: []byte(`{"messages":[{"role":"user","content":"q"}],"n":2}`)}, "more than one choice"},
		{"no messages", on, backend.Call{Body: []byte(`{"messages":[]}`)}, "messages"},
		{"not utf-8", on, backend.Call{Body: []byte("q"), Continue: &backend.Continuation{Seq: 1, Text: []byte{0xff, 'a'}}}, "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			call := tc.call
			if call.Continue == nil {
				call.Continue = cont
			}
			_, err := gen(tc.b, context.Background(), call, newCollected())
			var we *wire.Error
			require.True(t, errors.As(err, &we), "%v", err)
			assert.Equal(t, wire.CodeBadRequest, we.Code)
			assert.Contains(t, we.Description, tc.says)
		})
	}
}

// FuzzContinue: the body and the text so far come from the client. Building
// the continued request must never panic; when it succeeds the server gets
// one JSON object that carries the text so far at the end of the
// conversation or prompt.
func FuzzContinue(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":"q"}]}`), []byte("so far"), false)
	f.Add([]byte(`{"messages":[{"role":"assistant","content":"pre"}],"continue_final_message":true}`), []byte("x"), false)
	f.Add([]byte(`{"prompt":["a"],"n":1,"echo":true}`), []byte("tail"), false)
	f.Add([]byte("plain text"), []byte("\"quoted\" \\ <b>"), true)
	f.Fuzz(func(t *testing.T, body, text []byte, completions bool) {
		b, err := New(Config{BaseURL: "http://h:1", Continue: true, Completions: completions})
		require.NoError(t, err)
		hc, err := b.build(backend.Call{Capability: wire.CapGenerate, Model: "m", Body: body, Stream: true,
			Continue: &backend.Continuation{Seq: 1, Text: text}})
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeBadRequest {
				t.Fatalf("error is not a 400 wire error: %v", err)
			}
			return
		}
		var sent map[string]json.RawMessage
		if err := json.NewDecoder(hc.body).Decode(&sent); err != nil {
			t.Fatalf("request body is not a JSON object: %v", err)
		}
		if len(text) == 0 {
			return
		}
		if hc.path == "/completions" {
			var p string
			var ps []string
			if json.Unmarshal(sent["prompt"], &p) != nil {
				if json.Unmarshal(sent["prompt"], &ps) != nil || len(ps) != 1 {
					t.Fatalf("prompt %s", sent["prompt"])
				}
				p = ps[0]
			}
			if !strings.HasSuffix(p, string(text)) {
				t.Fatalf("prompt %q does not end in %q", p, text)
			}
			return
		}
		var msgs []json.RawMessage // earlier messages may be anything the client sent
		if err := json.Unmarshal(sent["messages"], &msgs); err != nil || len(msgs) == 0 {
			t.Fatalf("messages %s: %v", sent["messages"], err)
		}
		var last struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		}
		if err := json.Unmarshal(msgs[len(msgs)-1], &last); err != nil || last.Role != "assistant" ||
			!strings.HasSuffix(last.Content, string(text)) {
			t.Fatalf("last message %+v does not continue %q", last, text)
		}
		if string(sent["continue_final_message"]) != "true" || string(sent["add_generation_prompt"]) != "false" {
			t.Fatalf("flags: %s %s", sent["continue_final_message"], sent["add_generation_prompt"])
		}
	})
}
