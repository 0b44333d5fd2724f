package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestAuth401(t *testing.T) {
	e := newEnv(t)
	cases := []struct{ name, method, path, auth string }{
		{"no key", "POST", "/v1/chat/completions", ""},
		{"wrong key", "POST", "/v1/chat/completions", "Bearer sk-nope"},
		{"not bearer", "POST", "/v1/embeddings", keyAcme},
		{"models", "GET", "/v1/models", "Bearer "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.base+tc.path, strings.NewReader(chatBody))
			require.NoError(t, err)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			ae := decode[apiError](t, resp)
			assert.Equal(t, "invalid_api_key", ae.Error.Code)
			assert.Equal(t, "invalid_request_error", ae.Error.Type)
			assert.NotEmpty(t, ae.Error.Message)
		})
	}
	select {
	case s := <-e.mesh.seen:
		t.Fatalf("an unauthenticated request reached the mesh: %v", s.subject)
	default:
	}
}

func TestErrorMapping(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, path, body string
		hdr              map[string]string
		status           int
		code             string
		typ              string
	}{
		{"unknown model", "/v1/chat/completions", `{"model":"no-such-model"}`, nil, 404, "model_not_found", "invalid_request_error"},
		{"unknown model streamed", "/v1/chat/completions", `{"model":"no-such-model","stream":true}`, nil, 404, "model_not_found", "invalid_request_error"},
		{"invalid model id", "/v1/embeddings", `{"model":"llama3.1:8b"}`, nil, 404, "model_not_found", "invalid_request_error"},
		{"privacy", "/v1/chat/completions", `{"model":"private-model"}`, nil, 403, "privacy_violation", "permission_error"},
		{"overloaded", "/v1/chat/completions", `{"model":"busy-model"}`, nil, 429, "rate_limit_exceeded", "rate_limit_error"},
		{"no capacity", "/v1/chat/completions", `{"model":"none-model","stream":true}`, nil, 503, "no_capacity", "server_error"},
		{"timeout", "/v1/chat/completions", `{"model":"silent-model"}`, map[string]string{"X-Fed-Timeout-Ms": "200"}, 504, "timeout", "server_error"},
		{"bad json", "/v1/chat/completions", `{"model":`, nil, 400, "bad_request", "invalid_request_error"},
		{"bad header", "/v1/chat/completions", chatBody, map[string]string{"X-Fed-Cost-Tolerance": "101"}, 400, "bad_request", "invalid_request_error"},
		{"bad encoding", "/v1/embeddings", `{"model":"emb-1","encoding_format":"hex"}`, nil, 400, "bad_request", "invalid_request_error"},
		{"no route", "/v1/nope", `{}`, nil, 404, "unknown_url", "invalid_request_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp := e.do(t, "POST", tc.path, keyAcme, tc.body, tc.hdr)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			ae := decode[apiError](t, resp)
			assert.Equal(t, tc.code, ae.Error.Code, ae.Error.Message)
			assert.Equal(t, tc.typ, ae.Error.Type)
			assert.NotEmpty(t, ae.Error.Message)
			assert.Less(t, time.Since(start), 2*time.Second)
		})
	}
}

func TestHeaderOverridesWithinTenant(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name   string
		hdr    map[string]string
		status int
		want   map[string]string // mesh header → value
	}{
		{"tenant defaults", nil, 200, map[string]string{wire.HdrPrivacy: "internal", wire.HdrRegions: "eu-west-1,eu-central-1", wire.HdrTenant: "acme"}},
		{"stricter privacy", map[string]string{"X-Fed-Privacy": "confidential"}, 200, map[string]string{wire.HdrPrivacy: "confidential"}},
		{"weaker privacy", map[string]string{"X-Fed-Privacy": "public"}, 403, nil},
		{"bad privacy", map[string]string{"X-Fed-Privacy": "secret"}, 400, nil},
		{"region subset", map[string]string{"X-Fed-Regions": "eu-central-1"}, 200, map[string]string{wire.HdrRegions: "eu-central-1"}},
		{"region outside", map[string]string{"X-Fed-Regions": "eu-west-1,us-east-1"}, 403, nil},
		{"latency session", map[string]string{"X-Fed-Max-Latency-Ms": "250", "X-Fed-Session": "s-1"}, 200,
			map[string]string{wire.HdrMaxLatencyMs: "250", wire.HdrSession: "s-1"}},
		{"tenant not overridable", map[string]string{"X-Fed-Tenant": "evil"}, 200, map[string]string{wire.HdrTenant: "acme"}},
		{"timeout clamped", map[string]string{"X-Fed-Timeout-Ms": "3600000"}, 200, nil},
		{"request id not a token", map[string]string{"X-Fed-Request-Id": "a.b.*"}, 400, nil},
		{"request id kept", map[string]string{"X-Fed-Request-Id": "my-req-1"}, 200, map[string]string{wire.HdrRequestID: "my-req-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, tc.hdr)
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status != 200 {
				ae := decode[apiError](t, resp)
				assert.Contains(t, ae.Error.Message, "X-Fed-")
				return
			}
			s := e.mesh.next(t)
			for k, v := range tc.want {
				assert.Equal(t, v, s.header.Get(k), k)
			}
			ms, err := strconv.Atoi(s.header.Get(wire.HdrTimeoutMs))
			require.NoError(t, err)
			assert.LessOrEqual(t, ms, 3000, "never longer than the gateway's timeout")
		})
	}
}

func TestTenantRateLimit(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/chat/completions", keyLimited, chatBody, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp = e.do(t, "POST", "/v1/chat/completions", keyLimited, chatBody, nil)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Equal(t, "rate_limit_exceeded", decode[apiError](t, resp).Error.Code)
	// Another tenant is not affected.
	resp = e.do(t, "POST", "/v1/chat/completions", keyOpen, chatBody, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestEmbeddings(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "POST", "/v1/embeddings", keyAcme, `{"model":"emb-1","input":"hello","encoding_format":"float"}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	type vec struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string    `json:"object"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
		Usage usage  `json:"usage"`
	}
	got := decode[vec](t, resp)
	assert.Equal(t, "list", got.Object)
	require.Len(t, got.Data, 1)
	assert.Equal(t, []float64{0.5, -1, 2}, got.Data[0].Embedding)
	assert.Equal(t, 3, got.Usage.TotalTokens)
	s := e.mesh.next(t)
	assert.Equal(t, "fed.infer.embed", s.subject)
	assert.Equal(t, modelEmbed, s.header.Get(wire.HdrModel))

	// The official SDKs ask for base64 by default: floats are encoded.
	resp = e.do(t, "POST", "/v1/embeddings", keyAcme, `{"model":"emb-1","input":"hello","encoding_format":"base64"}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	type b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	gb := decode[b64](t, resp)
	require.Len(t, gb.Data, 1)
	raw, err := base64.StdEncoding.DecodeString(gb.Data[0].Embedding)
	require.NoError(t, err)
	require.Len(t, raw, 12)
	var fs []float32
	for i := 0; i < 3; i++ {
		fs = append(fs, math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	}
	assert.Equal(t, []float32{0.5, -1, 2}, fs)
}

func TestModelsFromCatalog(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/v1/models", keyAcme, "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	got := decode[modelList](t, resp)
	assert.Equal(t, "list", got.Object)
	require.Len(t, got.Data, 2)
	assert.Equal(t, modelChat, got.Data[0].ID)
	assert.Equal(t, "model", got.Data[0].Object)
	assert.Equal(t, []string{"code", "generate"}, got.Data[0].Capabilities)
	assert.Equal(t, []string{"n1", "n2"}, got.Data[0].Nodes)
	assert.EqualValues(t, 1700000000, got.Data[0].Created)
	assert.Equal(t, modelEmbed, got.Data[1].ID)
}

func TestModelsWithoutCatalog(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Subjects.Prefix = "other" }) // nobody serves other.catalog.list
	resp := e.do(t, "GET", "/v1/models", keyAcme, "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "no_capacity", decode[apiError](t, resp).Error.Code)
}

func TestAudioAndImages(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "hello.wav")
	require.NoError(t, err)
	_, _ = fw.Write([]byte("AUDIO"))
	require.NoError(t, mw.WriteField("model", "whisper-1"))
	require.NoError(t, mw.WriteField("language", "en"))
	require.NoError(t, mw.Close())
	resp := e.do(t, "POST", "/v1/audio/transcriptions", keyAcme, buf.String(), map[string]string{"Content-Type": mw.FormDataContentType()})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "heard AUDIO from hello.wav in en", decode[map[string]string](t, resp)["text"])
	s := e.mesh.next(t)
	assert.Equal(t, "fed.infer.transcribe", s.subject)
	assert.Equal(t, "whisper-1", s.header.Get(wire.HdrModel))
	assert.Equal(t, "AUDIO", string(s.body), "the body is the raw audio")

	resp = e.do(t, "POST", "/v1/audio/transcriptions", keyAcme, "not multipart", nil)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	resp = e.do(t, "POST", "/v1/audio/speech", keyAcme, `{"model":"tts-1","input":"hi","voice":"alloy","response_format":"wav"}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "audio/wav", resp.Header.Get("Content-Type"))
	audio, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "RIFFfakewav", string(audio))
	assert.Equal(t, "fed.infer.synthesize", e.mesh.next(t).subject)

	resp = e.do(t, "POST", "/v1/images/generations", keyAcme, `{"model":"sd-1","prompt":"a cat"}`, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"created":1700000000,"data":[{"url":"https://example.invalid/cat.png"}]}`, readAll(t, resp))
	assert.Equal(t, "fed.infer.imagegen", e.mesh.next(t).subject)
}

func TestHealthReadyAndMetrics(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/healthz", "", "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp = e.do(t, "GET", "/readyz", "", "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	require.Equal(t, 200, e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, nil).StatusCode)
	stream := e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"chat-1","stream":true}`, nil)
	require.Len(t, sseEvents(t, stream), len(streamTokens)+2)
	require.Equal(t, 404, e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"no-such-model"}`, nil).StatusCode)

	m := readAll(t, e.scrape(t))
	for _, want := range []string{
		`fedmesh_gateway_requests_total{endpoint="chat",model="chat-1",node="n1",status="200",tenant="acme"} 2`,
		`fedmesh_gateway_errors_total{code="404",endpoint="chat",model="other",node="none",tenant="acme"} 1`,
		`fedmesh_gateway_tokens_total{endpoint="chat",model="chat-1",node="n1",tenant="acme"} 8`,
		`fedmesh_gateway_request_duration_seconds_count{endpoint="chat",model="chat-1",node="n1",tenant="acme"} 2`,
		`fedmesh_gateway_time_to_first_token_seconds_count{endpoint="chat",model="chat-1",node="n1",tenant="acme"} 1`,
		`fedmesh_gateway_active_streams 0`,
	} {
		assert.Contains(t, m, want)
	}

	e.gwConn.Close()
	resp = e.do(t, "GET", "/readyz", "", "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "not ready without NATS")
	resp = e.do(t, "GET", "/healthz", "", "", nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "but the process is up")
	// Stop now, not at cleanup: with its connection closed the SDK client's
	// unsubscribe fails, which is expected here, not a failed stop.
	_ = e.gw.Stop()
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// gaugeValue reads an unlabelled gauge from /metrics (-1 when absent).
func gaugeValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	resp := e.scrape(t)
	defer resp.Body.Close()
	for _, line := range strings.Split(readAll(t, resp), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	return -1
}
