package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

type chatResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

const chatBody = `{"model":"chat-1","messages":[{"role":"user","content":"hi"}]}`

func TestChatCompletion(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[chatResponse](t, resp)
	assert.Equal(t, "chat.completion", got.Object)
	assert.Equal(t, "chatcmpl-"+resp.Header.Get(hdrRequestID), got.ID)
	assert.Equal(t, modelChat, got.Model)
	require.Len(t, got.Choices, 1)
	assert.Equal(t, "assistant", got.Choices[0].Message.Role)
	assert.Equal(t, "Hello, world!", got.Choices[0].Message.Content)
	require.NotNil(t, got.Choices[0].FinishReason)
	assert.Equal(t, "stop", *got.Choices[0].FinishReason)
	require.NotNil(t, got.Usage)
	assert.Equal(t, 4, got.Usage.CompletionTokens)
	assert.Equal(t, "n1", resp.Header.Get(hdrNode))

	s := e.mesh.next(t)
	assert.Equal(t, "fed.infer.generate", s.subject)
	assert.JSONEq(t, chatBody, string(s.body), "the OpenAI body goes to the node unchanged")
	assert.Equal(t, "acme", s.header.Get(wire.HdrTenant))
	assert.Equal(t, modelChat, s.header.Get(wire.HdrModel))
	assert.Equal(t, "internal", s.header.Get(wire.HdrPrivacy))
	assert.Equal(t, "eu-west-1,eu-central-1", s.header.Get(wire.HdrRegions))
	assert.Equal(t, resp.Header.Get(hdrRequestID), s.header.Get(wire.HdrRequestID))
	assert.Empty(t, s.header.Get(wire.HdrStream))
}

func TestCompletionsAndCodeCapability(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/completions", keyAcme, `{"model":"chat-1","prompt":"def f("}`,
		map[string]string{"X-Fed-Capability": "code"})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[chatResponse](t, resp)
	assert.Equal(t, "text_completion", got.Object)
	require.Len(t, got.Choices, 1)
	assert.Equal(t, "Hello, world!", got.Choices[0].Text)
	assert.Equal(t, "fed.infer.code", e.mesh.next(t).subject)

	resp = e.do(t, "POST", "/v1/completions", keyAcme, `{"model":"chat-1","prompt":"x"}`,
		map[string]string{"X-Fed-Capability": "imagegen"})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// sseEvents reads the data: lines of an SSE body, in order.
func sseEvents(t *testing.T, resp *http.Response) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out = append(out, d)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

func TestChatStreamSSE(t *testing.T) {
	cases := []struct {
		name, path, body string
		usage            bool
		object           string
	}{
		{"chat", "/v1/chat/completions", `{"model":"chat-1","stream":true,"messages":[{"role":"user","content":"hi"}]}`, false, "chat.completion.chunk"},
		{"chat with usage", "/v1/chat/completions", `{"model":"chat-1","stream":true,"stream_options":{"include_usage":true},"messages":[]}`, true, "chat.completion.chunk"},
		{"completions", "/v1/completions", `{"model":"chat-1","stream":true,"prompt":"hi"}`, false, "text_completion"},
	}
	e := newEnv(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, "POST", tc.path, keyAcme, tc.body, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			assert.Equal(t, "true", e.mesh.next(t).header.Get(wire.HdrStream))
			events := sseEvents(t, resp)
			require.NotEmpty(t, events)
			assert.Equal(t, "[DONE]", events[len(events)-1], "the stream ends in [DONE]")
			var text []string
			var finish string
			var u *usage
			for i, ev := range events[:len(events)-1] {
				var c chatResponse
				require.NoError(t, json.Unmarshal([]byte(ev), &c), ev)
				assert.Equal(t, tc.object, c.Object)
				assert.Equal(t, modelChat, c.Model)
				if c.Usage != nil {
					u = c.Usage
					assert.Empty(t, c.Choices)
					continue
				}
				require.Len(t, c.Choices, 1)
				ch := c.Choices[0]
				if i == 0 && tc.object == "chat.completion.chunk" {
					assert.Equal(t, "assistant", ch.Delta.Role)
				}
				if ch.FinishReason != nil {
					finish = *ch.FinishReason
					continue
				}
				text = append(text, ch.Delta.Content+ch.Text)
			}
			assert.Equal(t, streamTokens, text, "one SSE chunk per mesh chunk, in order")
			assert.Equal(t, "stop", finish)
			if tc.usage {
				require.NotNil(t, u)
				assert.Equal(t, len(streamTokens), u.CompletionTokens)
			} else {
				assert.Nil(t, u)
			}
		})
	}
}

func TestStreamSplitRuneAndMidStreamError(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"split-model","stream":true}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var text string
	for _, ev := range sseEvents(t, resp) {
		var c chatResponse
		if ev != "[DONE]" && json.Unmarshal([]byte(ev), &c) == nil && len(c.Choices) == 1 {
			text += c.Choices[0].Delta.Content
		}
	}
	assert.Equal(t, "é!", text, "a character cut between two chunks is not mangled")

	resp = e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"broken-model","stream":true}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "the first chunk already went out")
	events := sseEvents(t, resp)
	require.GreaterOrEqual(t, len(events), 2)
	last := events[len(events)-1]
	assert.NotEqual(t, "[DONE]", last, "a failed stream does not claim success")
	var ae apiError
	require.NoError(t, json.Unmarshal([]byte(last), &ae))
	assert.Equal(t, "internal_error", ae.Error.Code)
	assert.Equal(t, "internal error (request "+resp.Header.Get(hdrRequestID)+")", ae.Error.Message,
		"the node's own words stay in the log")
}

func TestClientDisconnectCancelsInMesh(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.base+"/v1/chat/completions",
		strings.NewReader(`{"model":"hang-model","stream":true}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+keyAcme)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	id := resp.Header.Get(hdrRequestID)
	require.NotEmpty(t, id)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	assert.Contains(t, line, "first", "the first chunk is flushed as it arrives")
	activeStreams(t, e, 1)

	cancel() // the client goes away
	assert.Equal(t, id, e.mesh.nextCancel(t, "no fed.cancel after the client disconnected"), "fed.cancel.<request id> is published")
	activeStreams(t, e, 0)
}

// activeStreams waits until the gateway reports want open streams.
func activeStreams(t *testing.T, e *env, want float64) {
	t.Helper()
	natsembed.Eventually(t, 2*time.Second, func() error {
		got := gaugeValue(t, e, "fedmesh_gateway_active_streams")
		return natsembed.Check(got == want, "active streams %v, want %v", got, want)
	})
}

func TestStopEndsStreams(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ShutdownGrace = 10 * time.Second })
	resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"hang-model","stream":true}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- e.gw.Stop() }()
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(rest), "shutting down", "the stream ends with an error event")
	assert.NotContains(t, string(rest), "[DONE]")
	require.NoError(t, <-stopped)
	assert.Less(t, time.Since(start), 5*time.Second, "Stop does not wait out a stream or the grace period")
	assert.Equal(t, resp.Header.Get(hdrRequestID), e.mesh.nextCancel(t, "Stop did not cancel the open stream in the mesh"))
	_, err = http.Get(e.base + "/healthz")
	assert.Error(t, err, "a stopped gateway does not listen")
}
