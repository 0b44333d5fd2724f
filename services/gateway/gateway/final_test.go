package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// droppedMetrics reads every fedmesh_gateway_late_messages_total and
// fedmesh_gateway_duplicates_total series from /metrics.
func droppedMetrics(t *testing.T, e *env) map[string]string {
	t.Helper()
	resp := e.scrape(t)
	defer resp.Body.Close()
	got := map[string]string{}
	for _, line := range strings.Split(readAll(t, resp), "\n") {
		if strings.HasPrefix(line, "fedmesh_gateway_late_messages_total{") || strings.HasPrefix(line, "fedmesh_gateway_duplicates_total{") {
			series, value, _ := strings.Cut(line, " ")
			got[series] = value
		}
	}
	return got
}

// Exactly one HTTP response per request, and for SSE exactly one terminal
// event, however many finals the mesh sends; the rest is counted.
func TestExactlyOneAnswerOverHTTP(t *testing.T) {
	late := func(node, message string) string {
		return fmt.Sprintf(`fedmesh_gateway_late_messages_total{ended_by="final",message=%q,node=%q}`, message, node)
	}
	dup := func(node string) string { return fmt.Sprintf(`fedmesh_gateway_duplicates_total{node=%q}`, node) }
	tokens := fmt.Sprint(len(streamTokens))
	cases := []struct {
		name    string
		model   string
		stream  bool
		status  int
		code    string // OpenAI error code when status is not 200
		metrics map[string]string
		cancel  bool // a cancel goes out for the late stream
	}{
		{"router error after the node's answer", modelLateRouter, false, 200, "",
			map[string]string{late("none", "final"): "1"}, false},
		{"router error after the node's stream", modelLateRouter, true, 200, "",
			map[string]string{late("none", "final"): "1"}, false},
		{"node's answer after the router's 504", modelRouterFirst, false, 504, "timeout",
			map[string]string{late("n1", "final"): "1"}, false},
		{"node's stream after the router's 504", modelRouterFirst, true, 504, "timeout",
			map[string]string{late("n1", "chunk"): tokens, late("n1", "final"): "1"}, true},
		{"two nodes answer", modelTwoNodes, false, 200, "",
			map[string]string{late("n2", "final"): "1", dup("n2"): "1"}, false},
		{"two nodes stream", modelTwoNodes, true, 200, "",
			map[string]string{late("n2", "chunk"): tokens, late("n2", "final"): "1", dup("n2"): "1"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			body := fmt.Sprintf(`{"model":%q,"stream":%t,"messages":[{"role":"user","content":"hi"}]}`, tc.model, tc.stream)
			resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, body, nil)
			require.Equal(t, tc.status, resp.StatusCode)
			switch {
			case tc.status != http.StatusOK:
				assert.Equal(t, tc.code, onlyJSON[apiError](t, resp).Error.Code)
			case tc.stream:
				events := sseEvents(t, resp)
				var text string
				terminal := 0
				for i, ev := range events {
					var c chatResponse
					var ae apiError
					switch {
					case ev == "[DONE]":
						terminal++
						assert.Equal(t, len(events)-1, i, "[DONE] is the last event")
					case json.Unmarshal([]byte(ev), &ae) == nil && ae.Error.Code != "":
						terminal++
						t.Errorf("error event %s", ev)
					case json.Unmarshal([]byte(ev), &c) == nil && len(c.Choices) == 1:
						text += c.Choices[0].Delta.Content
					}
				}
				assert.Equal(t, 1, terminal, "exactly one terminal event: %q", events)
				assert.Equal(t, strings.Join(streamTokens, ""), text, "one node's answer, once")
				assert.Equal(t, "n1", resp.Header.Get(hdrNode))
			default:
				got := onlyJSON[chatResponse](t, resp)
				require.Len(t, got.Choices, 1)
				assert.Equal(t, strings.Join(streamTokens, ""), got.Choices[0].Message.Content)
				assert.Equal(t, "n1", resp.Header.Get(hdrNode))
			}
			natsembed.Eventually(t, 0, func() error {
				got := droppedMetrics(t, e)
				return natsembed.Check(assert.ObjectsAreEqual(tc.metrics, got), "dropped metrics %v, want %v", got, tc.metrics)
			})
			if tc.cancel {
				assert.Equal(t, resp.Header.Get(hdrRequestID), e.mesh.nextCancel(t, "no cancel for the late stream"))
			}
		})
	}
}

// onlyJSON decodes the whole body as one JSON value: nothing may follow it.
func onlyJSON[T any](t *testing.T, resp *http.Response) T {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var v T
	dec := json.NewDecoder(strings.NewReader(string(b)))
	require.NoError(t, dec.Decode(&v), "body %s", b)
	rest, err := io.ReadAll(dec.Buffered())
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(string(rest)), "one answer only")
	assert.False(t, dec.More(), "one answer only")
	return v
}

// A body too large for one NATS message goes to the mesh out of band
// (fed_blobs, DESIGN §3.7): the request reaching the mesh names the blob
// and carries no body; the blob holds the body, sealed with the key the
// headers carry. A body over the cap (MaxBodyBytes, the SDK's cap too) is
// a 413 in the OpenAI format before anything is uploaded.
func TestLargeBodyOutOfBand(t *testing.T) {
	const limit = 3 << 20
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = limit })
	natsembed.BucketsForTest(t, e.gwConn)
	content := strings.Repeat("x", int(e.gwConn.MaxPayload()))
	body := fmt.Sprintf(`{"model":"chat-1","messages":[{"role":"user","content":%q}]}`, content)
	resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, body, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := e.mesh.next(t)
	assert.Empty(t, got.body, "the body is not in the message")
	ref, ok, err := blobs.BodyRef(got.header)
	require.NoError(t, err)
	require.True(t, ok, "the message names its blob")
	assert.EqualValues(t, len(body), ref.Size)

	over := fmt.Sprintf(`{"model":"chat-1","messages":[{"role":"user","content":%q}]}`, strings.Repeat("x", limit))
	resp = e.do(t, "POST", "/v1/chat/completions", keyAcme, over, nil)
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	ae := onlyJSON[apiError](t, resp)
	assert.Equal(t, "request_too_large", ae.Error.Code)
	assert.Contains(t, ae.Error.Message, "larger than the gateway's limit of 3145728 bytes")
	m := readAll(t, e.scrape(t))
	assert.Contains(t, m, `fedmesh_gateway_errors_total{code="413",endpoint="chat",model="any",node="none",tenant="acme"} 1`)
}
