package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// The gateway part (issue 16): what the HTTP gateway and the mesh add over
// calling an OpenAI-compatible server directly, one client at a time, and
// whether the node agent keeps its upstream connections.
// gwModelRemote is served by an openai node in front of the tiny upstream;
// the synthetic side uses modelEcho of the zero-delay node.
const gwModelRemote = "bench-upstream"

// upstreamAnswer is the tiny upstream's whole chat answer.
var upstreamAnswer = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"m",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}],` +
	`"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)

// tinyUpstream answers every chat completion at once, whole (the bench's
// requests do not stream); it counts the TCP connections it accepts.
type tinyUpstream struct {
	srv    *http.Server
	ln     net.Listener
	opened atomic.Int64
}

func startUpstream() (*tinyUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: upstream listen: %w", err)
	}
	u := &tinyUpstream{ln: ln}
	u.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(upstreamAnswer)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.opened.Add(1)
			}
		},
	}
	go func() { _ = u.srv.Serve(ln) }() // ends with close
	return u, nil
}

func (u *tinyUpstream) url() string { return "http://" + u.ln.Addr().String() }

func (u *tinyUpstream) close() { _ = u.srv.Close() }

// upstreamNode is an openai node in front of the tiny upstream.
func upstreamNode(be *openai.Backend) nodeagent.Config {
	n := nodeagent.DefaultConfig()
	n.NodeID, n.Region, n.MaxConcurrency = "bench-upstream-node", "local", 64
	n.Models = []record.Model{{ModelID: gwModelRemote, Capabilities: []string{wire.CapGenerate}}}
	n.Backend = be
	return n
}

// startUpstream starts the rig's tiny upstream and the openai backend of
// its node.
func (r *rig) startUpstream() error {
	var err error
	if r.up, err = startUpstream(); err != nil {
		return err
	}
	r.upstream, err = openai.New(openai.Config{BaseURL: r.up.url(), MaxConns: 64})
	return err
}

// chat posts one whole chat completion to base and reads the answer to EOF.
func chat(ctx context.Context, hc *http.Client, base, model string, auth bool) error {
	body := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"ping"}]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+benchKey)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s model %s: HTTP %d", base, model, resp.StatusCode)
	}
	return nil
}

// gatewayResult is one run of the gateway part.
type gatewayResult struct {
	direct, viaSynth, viaUpstream dist
	newConnsPerReq                float64 // the openai node's new upstream connections per request, after warm-up
	upstreamOpened                int64   // TCP connections the upstream accepted in the measured part
}

// measure sends n requests per path, one at a time, the three paths
// interleaved request by request so they see the same machine.
func (r *rig) gatewayMeasure(ctx context.Context, n int) (gatewayResult, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	defer hc.CloseIdleConnections()
	gw := "http://" + r.mesh.Gateway.Addr()
	type path struct {
		base, model string
		auth        bool
		samples     []time.Duration
	}
	paths := []*path{{base: r.up.url(), model: "m"}, {base: gw, model: modelEcho, auth: true}, {base: gw, model: gwModelRemote, auth: true}}
	for range 200 { // warm: connections, the nodes' health records
		for _, p := range paths {
			if err := chat(ctx, hc, p.base, p.model, p.auth); err != nil {
				return gatewayResult{}, fmt.Errorf("bench gateway warm-up: %w", err)
			}
		}
	}
	opened0, reused0 := r.upstream.Stats()
	accepted0 := r.up.opened.Load()
	for range n {
		for _, p := range paths {
			t0 := time.Now()
			if err := chat(ctx, hc, p.base, p.model, p.auth); err != nil {
				return gatewayResult{}, fmt.Errorf("bench gateway: %w", err)
			}
			p.samples = append(p.samples, time.Since(t0))
		}
	}
	opened1, reused1 := r.upstream.Stats()
	res := gatewayResult{direct: summarise(paths[0].samples), viaSynth: summarise(paths[1].samples),
		viaUpstream: summarise(paths[2].samples), upstreamOpened: r.up.opened.Load() - accepted0}
	if reqs := (opened1 - opened0) + (reused1 - reused0); reqs > 0 {
		res.newConnsPerReq = float64(opened1-opened0) / float64(reqs)
	}
	return res, nil
}

func (rg *rig) gatewayTable(ctx context.Context, w io.Writer, o Options) error {
	r, err := rg.gatewayMeasure(ctx, o.Samples)
	if err != nil {
		return err
	}
	added := func(d dist) float64 { return ms(d.p50 - r.direct.p50) }
	fmt.Fprintf(w, "### Gateway: OpenAI chat completions, 1 client, %d requests per path, interleaved\n\n", o.Samples)
	fmt.Fprintf(w, "Direct is the tiny upstream itself; the other two go client → gateway → router → node agent over the mesh.\n\n")
	fmt.Fprintf(w, "| path | p50 | p99 | added p50 over direct | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| direct to the upstream | %.3f ms | %.3f ms | — | |\n", ms(r.direct.p50), ms(r.direct.p99))
	fmt.Fprintf(w, "| gateway → synthetic node | %.3f ms | %.3f ms | %+.3f ms | ≤ 0.5 ms |\n", ms(r.viaSynth.p50), ms(r.viaSynth.p99), added(r.viaSynth))
	fmt.Fprintf(w, "| gateway → openai node → the upstream | %.3f ms | %.3f ms | %+.3f ms | |\n\n", ms(r.viaUpstream.p50), ms(r.viaUpstream.p99), added(r.viaUpstream))
	fmt.Fprintf(w, "Node agent → upstream after warm-up: %.4f new connections per request (fedmesh_node_backend_connections_total); the upstream accepted %d new TCP connections in the measured %d requests (target ≈ 0).\n\n",
		r.newConnsPerReq, r.upstreamOpened, o.Samples*2)
	return nil
}
