package gateway

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// leaks are strings of the mesh's insides: node ids, backend URLs and
// errors, subjects, NATS. No error answer may carry one.
var leaks = []string{"10.1.2.3", "http", leakyNode, "n1", "fed.", "other.", "nats", "NATS", "backend", "Traceback",
	"dial", "crashed", "refused", "catalog", "router"}

// A tenant sees a generic text and its request id for every error it did not
// cause itself; the access log has the whole description.
func TestErrorsDoNotLeakInternals(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	e := newEnvLogging(t, log)
	// nothing serves the prefix "other": every request meets NATS no responders
	lonely := newEnvLogging(t, log, func(c *Config) { c.Subjects.Prefix = "other" })
	cases := []struct {
		name         string
		env          *env
		method, path string
		body         string
		hdr          map[string]string
		status       int    // HTTP status (200: a stream that failed after its first chunk)
		code         string // OpenAI code
		want         string // the message, before " (request <id>)"
		node, detail string // the access log's node, and what its error holds
		logCode      float64
	}{
		{name: "node 503 naming its backend", env: e, path: "/v1/chat/completions", body: `{"model":"leaky-503-model"}`,
			status: 503, code: "no_capacity", want: "no capacity for this request, retry later",
			node: leakyNode, detail: "dial tcp 10.1.2.3:8000", logCode: 503},
		{name: "node 503 before a stream's first chunk", env: e, path: "/v1/chat/completions",
			body: `{"model":"leaky-503-model","stream":true}`, status: 503, code: "no_capacity",
			want: "no capacity for this request, retry later", node: leakyNode, detail: "http://10.1.2.3:8000", logCode: 503},
		{name: "node 500 with a traceback", env: e, path: "/v1/chat/completions", body: `{"model":"leaky-500-model"}`,
			status: 500, code: "internal_error", want: "internal error", node: leakyNode, detail: "Traceback", logCode: 500},
		{name: "node 500 mid-stream", env: e, path: "/v1/chat/completions", body: `{"model":"broken-model","stream":true}`,
			status: 200, code: "internal_error", want: "internal error", node: "n1", detail: "backend crashed", logCode: 500},
		{name: "node output not JSON", env: e, path: "/v1/images/generations", body: `{"model":"bad-json-model","prompt":"a cat"}`,
			status: 500, code: "internal_error", want: "internal error", node: "n1", detail: "not JSON", logCode: 500},
		{name: "no router: NATS no responders", env: lonely, path: "/v1/chat/completions", body: chatBody,
			status: 503, code: "no_capacity", want: "no capacity for this request, retry later",
			detail: "no router is serving other.infer.generate", logCode: 503},
		{name: "no catalog: NATS no responders", env: lonely, method: "GET", path: "/v1/models",
			status: 503, code: "no_capacity", want: "no capacity for this request, retry later",
			detail: "other.catalog.list", logCode: 503},
		{name: "router 404", env: e, path: "/v1/chat/completions", body: `{"model":"no-such-model"}`,
			status: 404, code: "model_not_found", want: "model no-such-model does not exist or no node serves it",
			detail: "no node serves model no-such-model", logCode: 404},
		{name: "router 403", env: e, path: "/v1/chat/completions", body: `{"model":"private-model"}`,
			status: 403, code: "privacy_violation", want: "no node may serve this request under its privacy and region requirements",
			detail: "no node is cleared for restricted", logCode: 403},
		{name: "router 429", env: e, path: "/v1/chat/completions", body: `{"model":"busy-model"}`,
			status: 429, code: "rate_limit_exceeded", want: "rate limited, retry later",
			detail: "every node is over its concurrency", logCode: 429},
		{name: "SDK deadline", env: e, path: "/v1/chat/completions", body: `{"model":"silent-model"}`,
			hdr:    map[string]string{"X-Fed-Timeout-Ms": "200"},
			status: 504, code: "timeout", want: "timed out", detail: "no final answer before the deadline", logCode: 504},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("leak-%d", i)
			hdr := map[string]string{hdrRequestID: id}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			resp := tc.env.do(t, cmpOr(tc.method, "POST"), tc.path, keyAcme, tc.body, hdr)
			require.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, id, resp.Header.Get(hdrRequestID))
			var ae apiError
			if tc.status == http.StatusOK { // the error came as the stream's last event
				events := sseEvents(t, resp)
				require.NotEmpty(t, events)
				require.NoError(t, json.Unmarshal([]byte(events[len(events)-1]), &ae))
			} else {
				assert.Empty(t, resp.Header.Get(hdrNode), "no node id on an error answer")
				ae = onlyJSON[apiError](t, resp)
			}
			assert.Equal(t, tc.want+" (request "+id+")", ae.Error.Message)
			assert.Equal(t, tc.code, ae.Error.Code)
			for _, bad := range leaks {
				assert.NotContains(t, ae.Error.Message, bad)
			}
			if tc.status == http.StatusTooManyRequests {
				assert.Equal(t, "1", resp.Header.Get("Retry-After"))
			}

			line := accessLine(t, logs, id)
			assert.Equal(t, tc.node, line["node"])
			assert.Equal(t, tc.logCode, line["code"])
			assert.Contains(t, line["error"], tc.detail, "the log line has the detail")
		})
	}
}

// Errors about the caller's own request stay specific: they name its own
// field, header, key or tenant, and carry its request id.
func TestCallerErrorsStaySpecific(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	e := newEnvLogging(t, log)
	cases := []struct {
		name, key, body string
		hdr             map[string]string
		status          int
		want            string // in the message
	}{
		{"no key", "", chatBody, nil, 401, "missing or invalid API key"},
		{"bad JSON", keyAcme, `{"model":`, nil, 400, "request body is not a valid JSON object"},
		{"bad header", keyAcme, chatBody, map[string]string{"X-Fed-Cost-Tolerance": "101"}, 400, "X-Fed-Cost-Tolerance"},
		{"weaker privacy", keyAcme, chatBody, map[string]string{"X-Fed-Privacy": "public"}, 403, "weaker than tenant acme's level internal"},
		{"region outside", keyAcme, chatBody, map[string]string{"X-Fed-Regions": "us-east-1"}, 403, "region us-east-1 is not allowed"},
		{"invalid model id", keyAcme, `{"model":"llama3.1:8b"}`, nil, 404, `model llama3.1:8b does not exist`},
		{"bad capability", keyAcme, chatBody, map[string]string{"X-Fed-Capability": "paint"}, 400, "X-Fed-Capability"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("own-%d", i)
			hdr := map[string]string{hdrRequestID: id}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			resp := e.do(t, "POST", "/v1/chat/completions", tc.key, tc.body, hdr)
			require.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, id, resp.Header.Get(hdrRequestID))
			ae := onlyJSON[apiError](t, resp)
			assert.Contains(t, ae.Error.Message, tc.want)
			assert.True(t, strings.HasSuffix(ae.Error.Message, " (request "+id+")"), ae.Error.Message)
			assert.Equal(t, float64(tc.status), accessLine(t, logs, id)["status"])
		})
	}

	t.Run("invalid request id is replaced", func(t *testing.T) {
		resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, map[string]string{hdrRequestID: "a.b.*"})
		require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		id := resp.Header.Get(hdrRequestID)
		require.NotEmpty(t, id)
		assert.NotEqual(t, "a.b.*", id, "an id that cannot be a subject token is not used")
		ae := onlyJSON[apiError](t, resp)
		assert.Contains(t, ae.Error.Message, "X-Fed-Request-Id")
		assert.True(t, strings.HasSuffix(ae.Error.Message, " (request "+id+")"), ae.Error.Message)
		accessLine(t, logs, id)
	})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Connections are bounded in time: idle ones closed, slow headers and
// bodies cut, while a stream may outlive every one of these limits.
func TestConnectionTimeouts(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	const (
		headerTimeout = 300 * time.Millisecond
		readTimeout   = 500 * time.Millisecond
		writeTimeout  = 300 * time.Millisecond
		idleTimeout   = 300 * time.Millisecond
	)
	e := newEnvLogging(t, log, func(c *Config) {
		c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = headerTimeout, readTimeout, writeTimeout, idleTimeout
		c.MaxHeaderBytes = 4 << 10
	})
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		conn, err := net.Dial("tcp", e.gw.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}

	t.Run("idle keep-alive closed after IdleTimeout", func(t *testing.T) {
		conn := dial(t)
		br := bufio.NewReader(conn)
		for i := range 2 { // the second request proves the connection is kept alive
			_, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err, "request %d", i)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			if i == 0 {
				time.Sleep(idleTimeout / 3) // idle, but not for long enough
			}
		}
		answered := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(natsembed.WaitFor))
		_, err := br.ReadByte()
		require.ErrorIs(t, err, io.EOF, "the gateway closed the idle connection")
		assert.GreaterOrEqual(t, time.Since(answered), idleTimeout-50*time.Millisecond, "not before IdleTimeout")
		assert.Less(t, time.Since(answered), idleTimeout+time.Second, "soon after IdleTimeout")
	})

	t.Run("slow headers cut by ReadHeaderTimeout", func(t *testing.T) {
		conn := dial(t)
		start := time.Now()
		got := slowloris(t, conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n", "X-Slow: a\r\n")
		assert.Empty(t, got, "no answer to a request whose headers never ended")
		assert.Less(t, time.Since(start), headerTimeout+time.Second)
		assert.GreaterOrEqual(t, time.Since(start), headerTimeout-50*time.Millisecond, "headers trickling in do not extend it")
	})

	t.Run("slow body cut by ReadTimeout: 408", func(t *testing.T) {
		conn := dial(t)
		start := time.Now()
		got := slowloris(t, conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "+keyAcme+
			"\r\nX-Fed-Request-Id: slow-body\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", " ")
		assert.GreaterOrEqual(t, time.Since(start), readTimeout-50*time.Millisecond)
		assert.Less(t, time.Since(start), readTimeout+time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
		require.NoError(t, err, "answer %q", got)
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
		ae := onlyJSON[apiError](t, resp)
		assert.Equal(t, "request_timeout", ae.Error.Code)
		assert.Equal(t, "request body not received in time (request slow-body)", ae.Error.Message)
		line := accessLine(t, logs, "slow-body")
		assert.Equal(t, 408.0, line["status"])
		assert.Contains(t, line["error"], "read timeout")
		select {
		case s := <-e.mesh.seen:
			t.Fatalf("a request whose body never came reached the mesh: %s", s.subject)
		default:
		}
	})

	t.Run("headers over MaxHeaderBytes: 431", func(t *testing.T) {
		resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, map[string]string{"X-Big": strings.Repeat("b", 16<<10)})
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
	})

	t.Run("a stream outlives ReadTimeout and WriteTimeout", func(t *testing.T) {
		start := time.Now()
		resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"hang-model","stream":true}`,
			map[string]string{"X-Fed-Timeout-Ms": "1500"})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		events := sseEvents(t, resp)
		require.Len(t, events, 2, "the first chunk, then the deadline's error: %q", events)
		assert.Contains(t, events[0], "first")
		var ae apiError
		require.NoError(t, json.Unmarshal([]byte(events[1]), &ae))
		assert.Equal(t, "timeout", ae.Error.Code, "ended by the request's own deadline, not a connection timeout")
		assert.GreaterOrEqual(t, time.Since(start), 1400*time.Millisecond)
	})
}

// slowloris sends head, then one more piece every 50 ms until the gateway
// stops reading (a write fails or it answers); it returns what the gateway
// answered.
func slowloris(t *testing.T, conn net.Conn, head, piece string) string {
	t.Helper()
	_, err := io.WriteString(conn, head)
	require.NoError(t, err)
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := io.WriteString(conn, piece); err != nil {
					return
				}
			}
		}
	})
	defer wg.Wait()
	defer close(stop)
	_ = conn.SetReadDeadline(time.Now().Add(natsembed.WaitFor))
	got, err := io.ReadAll(conn) // until the gateway closes
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the gateway never closed the connection")
	return string(got)
}

// Each write has its own deadline: a client that stops reading is cut
// off, one that keeps reading is served however long the response lasts.
func TestWriteDeadlinePerWrite(t *testing.T) {
	const timeout = 100 * time.Millisecond
	cases := []struct {
		name    string
		reads   bool
		wantErr bool
	}{
		{"client keeps reading: a response longer than the timeout", true, false},
		{"client stops reading: cut after the timeout", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flushed := make(chan error, 1)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				d := withWriteDeadlines(w, timeout)
				rc := http.NewResponseController(d) // as sse.go flushes
				var err error
				for i := 0; i < 3 && err == nil; i++ { // three events, 2×timeout apart
					if i > 0 {
						time.Sleep(2 * timeout)
					}
					if _, err = io.WriteString(d, strings.Repeat("x", 1000)); err == nil {
						err = rc.Flush()
					}
				}
				flushed <- err
			})}
			ln := newPipeListener()
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			client := ln.dial()
			var wg sync.WaitGroup
			defer wg.Wait()
			defer client.Close()
			_, err := io.WriteString(client, "GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
			require.NoError(t, err)
			if tc.reads {
				wg.Go(func() { _, _ = io.Copy(io.Discard, client) })
			}
			select {
			case err := <-flushed:
				if tc.wantErr {
					assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
				} else {
					assert.NoError(t, err)
				}
			case <-time.After(natsembed.WaitFor):
				t.Fatal("the handler is stuck in a write")
			}
			require.NoError(t, srv.Close())
			assert.ErrorIs(t, <-served, http.ErrServerClosed)
		})
	}
}

// pipeListener serves over net.Pipe: a write blocks until the other end
// reads, so a client that stops reading is seen at once.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial() net.Conn {
	client, server := net.Pipe()
	l.conns <- server
	return client
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// A tenant over its cap on requests in flight gets 429 with Retry-After; its
// other keys share the cap, other tenants are not affected, and a finished
// request gives its slot back.
func TestTenantConcurrencyCap(t *testing.T) {
	const keyAcme2 = "sk-acme-second"
	e := newEnv(t, func(c *Config) {
		acme := c.Keys[keyAcme]
		acme.MaxConcurrent = 2
		c.Keys[keyAcme] = acme
		c.Keys[keyAcme2] = acme
	})
	// Two of acme's requests hold its two slots: a silent one and a stream
	// (a stream holds its slot until it ends).
	held := make(chan int, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, body := range []string{`{"model":"silent-model"}`, `{"model":"hang-model","stream":true}`} {
		req, err := http.NewRequest("POST", e.base+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+keyAcme)
		req.Header.Set("X-Fed-Timeout-Ms", "1500")
		wg.Go(func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				held <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			held <- resp.StatusCode
		})
	}
	e.mesh.next(t)
	e.mesh.next(t) // both are in the mesh

	cases := []struct {
		name, key string
		status    int
	}{
		{"third request of the tenant", keyAcme, http.StatusTooManyRequests},
		{"the tenant's other key shares the cap", keyAcme2, http.StatusTooManyRequests},
		{"another tenant", keyOpen, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, "POST", "/v1/chat/completions", tc.key, chatBody, nil)
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status != http.StatusTooManyRequests {
				return
			}
			assert.Equal(t, "1", resp.Header.Get("Retry-After"))
			ae := onlyJSON[apiError](t, resp)
			assert.Equal(t, "rate_limit_exceeded", ae.Error.Code)
			assert.Equal(t, "too many concurrent requests: tenant acme may have 2 in flight (request "+
				resp.Header.Get(hdrRequestID)+")", ae.Error.Message)
		})
	}
	for range 2 {
		assert.Contains(t, []int{http.StatusGatewayTimeout, http.StatusOK}, <-held, "the held requests end by their deadline")
	}
	resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, chatBody, nil)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "slots are given back when requests end")
}

// A 200 KB model name is a 404 of bounded size, one "other" series and a
// bounded log line: the caller's string is never a label and is clipped
// wherever it is echoed.
func TestHugeModelNameStaysBounded(t *testing.T) {
	logs, log := natsembed.NewLogBuffer(t)
	e := newEnvLogging(t, log)
	huge := strings.Repeat("m", 200<<10)
	for i := range 3 {
		id := fmt.Sprintf("huge-%d", i)
		resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, `{"model":"`+huge+`"}`, map[string]string{hdrRequestID: id})
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		body := readAll(t, resp)
		assert.Less(t, len(body), 1<<10, "the answer echoes a clipped name")
		assert.Contains(t, body, "longer than 128 characters")
		line := accessLine(t, logs, id)
		assert.LessOrEqual(t, len(line["model"].(string)), 128+len("…"))
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		assert.Less(t, len(l), 4<<10, "no log line carries the name")
	}
	m := readAll(t, e.scrape(t))
	assert.Less(t, len(m), 32<<10, "/metrics stays small")
	assert.NotContains(t, m, "mmmmmmmmmmmmmmmm")
	assert.Contains(t, m, `fedmesh_gateway_errors_total{code="404",endpoint="chat",model="other",node="none",tenant="acme"} 3`)
}
