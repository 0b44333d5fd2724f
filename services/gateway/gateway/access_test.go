package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// accessLine finds the one access-log line of request id in logs; it fails
// the test when there are several.
func accessLine(t *testing.T, logs *natsembed.LogBuffer, id string) map[string]any {
	t.Helper()
	var found []map[string]any
	natsembed.Eventually(t, 0, func() error {
		found = found[:0]
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil {
				continue
			}
			if m["message"] == "request" && m[logging.KeyRequest] == id {
				found = append(found, m)
			}
		}
		return natsembed.Check(len(found) > 0, "no access-log line for request %s", id)
	})
	require.Len(t, found, 1, "one access-log line per request")
	return found[0]
}

func TestAccessLogLinePerRequest(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	e := newEnvLogging(t, log)
	cases := []struct {
		name, path, key, body string
		status                int
		want                  map[string]any // fields with exact values
		ttft                  bool           // a ttft field > 0
		level                 string
	}{
		{name: "whole answer", path: "/v1/chat/completions", key: keyAcme, body: chatBody, status: 200, level: "info",
			want: map[string]any{"tenant": "acme", "model": "chat-1", "node": "n1", "status": 200.0, "tokens": 4.0, "endpoint": "chat"}},
		{name: "stream", path: "/v1/chat/completions", key: keyAcme, body: `{"model":"chat-1","stream":true}`, status: 200,
			level: "info", ttft: true,
			want: map[string]any{"tenant": "acme", "model": "chat-1", "node": "n1", "status": 200.0, "tokens": 4.0}},
		{name: "embeddings", path: "/v1/embeddings", key: keyOpen, body: `{"model":"emb-1","input":"x"}`, status: 200, level: "info",
			want: map[string]any{"tenant": "open", "model": "emb-1", "node": "n1", "status": 200.0, "tokens": 3.0, "endpoint": "embeddings"}},
		{name: "mesh refusal", path: "/v1/chat/completions", key: keyAcme, body: `{"model":"no-such-model"}`, status: 404, level: "info",
			want: map[string]any{"tenant": "acme", "model": "no-such-model", "node": "", "status": 404.0, "tokens": 0.0, "code": 404.0}},
		{name: "node failure mid-stream", path: "/v1/chat/completions", key: keyAcme, body: `{"model":"broken-model","stream":true}`,
			status: 200, level: "warn", ttft: true,
			want: map[string]any{"node": "n1", "status": 500.0, "code": 500.0, "error": "backend crashed"}},
		{name: "no key", path: "/v1/chat/completions", body: chatBody, status: 401, level: "info",
			want: map[string]any{"tenant": "unauthenticated", "status": 401.0, "code": 401.0}},
		{name: "models", path: "/v1/models", key: keyAcme, status: 200, level: "info",
			want: map[string]any{"tenant": "acme", "status": 200.0, "endpoint": "models"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("access-%d", i)
			method := "POST"
			if tc.body == "" {
				method = "GET"
			}
			resp := e.do(t, method, tc.path, tc.key, tc.body, map[string]string{hdrRequestID: id})
			require.Equal(t, tc.status, resp.StatusCode)
			_, _ = resp.Body.Read(make([]byte, 1<<16)) // streams end when the body is read

			line := accessLine(t, logs, id)
			assert.Equal(t, tc.level, line["level"])
			for k, v := range tc.want {
				assert.Equal(t, v, line[k], "field %s of %v", k, line)
			}
			for _, k := range []string{"tenant", "model", "node", "status", "tokens", "elapsed", "endpoint"} {
				assert.Contains(t, line, k, "every line has %s", k)
			}
			if el, ok := line["elapsed"].(float64); assert.True(t, ok, "elapsed is a number of ms") {
				assert.Positive(t, el)
			}
			if tc.ttft {
				if v, ok := line["ttft"].(float64); assert.True(t, ok, "ttft in %v", line) {
					assert.Positive(t, v)
					assert.LessOrEqual(t, v, line["elapsed"].(float64))
				}
			} else {
				assert.NotContains(t, line, "ttft")
			}
			if tc.status == http.StatusOK && tc.want["code"] == nil {
				assert.NotContains(t, line, "code")
				assert.NotContains(t, line, "error")
			}
		})
	}
}
