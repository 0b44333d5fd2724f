package simserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/catalog/catalog"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A real node agent with the OpenAI-compatible backend, in a mesh on an
// embedded nats-server, serves a raw NATS request from a simserver: the
// answer is the simserver's own, tokens and all, and the simserver's
// metrics saw the requests (a repeated prompt hits its prefix cache).
func TestSimNodeAgentServesNATS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sim, err := simserver.Start(ctx, simserver.Config{Addr: "127.0.0.1:0", Models: []string{"m1"}, TimeScale: 20, Seed: 5,
		Log: natsembed.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sim.Stop()) })

	b, err := openai.New(openai.Config{BaseURL: sim.URL(), Continue: true, StallTimeout: 10 * time.Second})
	require.NoError(t, err)
	node := nodeagent.DefaultConfig()
	node.NodeID, node.Region, node.GPU, node.MaxConcurrency = "sim-1", "eu", true, 8
	node.HeartbeatInterval = 100 * time.Millisecond
	node.Models = []record.Model{{ModelID: "m1", Capabilities: []string{wire.CapGenerate}}}
	node.Backend = b
	s := natsembed.StartForTest(t)
	mesh, err := devmesh.Start(ctx, devmesh.Options{Server: s, Log: natsembed.Logger(t), Nodes: []nodeagent.Config{node},
		Catalog: func(c *catalog.Config) { c.NodeTTL = time.Second },
		Health:  func(c *health.Config) { c.HeartbeatInterval = 100 * time.Millisecond }})
	require.NoError(t, err)
	t.Cleanup(mesh.Stop)
	nc := natsembed.ConnectForTest(t, s)

	body := `{"messages":[{"role":"system","content":"` + strings.Repeat("You answer in words. ", 10) + `"},` +
		`{"role":"user","content":"hello mesh"}],"max_tokens":6,"ignore_eos":true}`
	direct := directAnswer(t, sim, body)

	// raw NATS, as `nats req fed.infer.generate` sends it; the first
	// tries may find no node yet
	var reply *nats.Msg
	natsembed.Eventually(t, 10*time.Second, func() error {
		msg := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
		msg.Data = []byte(body)
		var err error
		if reply, err = nc.RequestMsg(msg, 5*time.Second); err != nil {
			return err
		}
		return natsembed.Check(reply.Header.Get(wire.HdrStatus) == "done", "status %q: %s %s",
			reply.Header.Get(wire.HdrStatus), reply.Header.Get(wire.HdrServiceError), reply.Data)
	})
	assert.Equal(t, direct, string(reply.Data), "the simserver's answer, through the node")
	assert.Equal(t, "sim-1", reply.Header.Get(wire.HdrNode))
	assert.Equal(t, "6", reply.Header.Get(wire.HdrTokens), "usage.completion_tokens")

	// a stream through the SDK: one chunk per token
	c, err := client.New(nc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte(body)})
	require.NoError(t, err)
	defer st.Close()
	var chunks []string
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		chunks = append(chunks, string(ch.Data))
	}
	res, err := st.Result()
	require.NoError(t, err)
	assert.Equal(t, direct, strings.Join(chunks, ""))
	assert.Len(t, chunks, 6)
	assert.Equal(t, 6, res.Tokens)

	m := metricstest.ScrapeURL(t, sim.URL()+"/metrics")
	model := metricstest.Labels{simserver.LabelModelName: "m1"}
	// the direct call, at least one NATS try that reached the node, the stream
	assert.GreaterOrEqual(t, m.Value(simserver.MetricRequestSuccess, model), 3.0)
	assert.Greater(t, m.Value(simserver.MetricPrefixHits, model), 0.0, "the repeated prompt hit the prefix cache")
}

func directAnswer(t *testing.T, sim *simserver.Server, body string) string {
	t.Helper()
	resp, err := http.Post(sim.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)
	var a struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(data, &a))
	require.Len(t, a.Choices, 1)
	require.Equal(t, "6", strconv.Itoa(a.Usage.CompletionTokens))
	return a.Choices[0].Message.Content
}
