package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestRegistrationShowsInKV(t *testing.T) {
	e := start(t, node("gpu-1", "us-west", wire.PrivacyConfidential, synthetic.Config{}))
	ent, err := e.kv.Catalog.Get(context.Background(), buckets.NodeKey("gpu-1"))
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(ent.Value(), &raw))
	for _, field := range []string{"node_id", "region", "subject", "models", "gpu", "cost", "clearance",
		"max_concurrency", "registered_at"} {
		assert.Contains(t, raw, field, "DESIGN §5 field %s", field)
	}
	assert.Equal(t, "fed.node.gpu-1.infer", raw["subject"])
	assert.Equal(t, "confidential", raw["clearance"])
}

// A raw NATS request, as `nats req fed.infer.generate hello` sends it.
func TestRawNATSRequest(t *testing.T) {
	e := start(t, node("gpu-1", "us-west", wire.PrivacyInternal, synthetic.Config{Tokens: 5}))
	resp, err := e.nc.Request(subject.Default.Infer(wire.CapGenerate), []byte("hello"), 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "gpu-1", resp.Header.Get(wire.HdrNode))
	assert.Equal(t, wire.StatusDone, resp.Header.Get(wire.HdrStatus))
	assert.Equal(t, "0", resp.Header.Get(wire.HdrSeq))
	assert.NotEmpty(t, resp.Header.Get(wire.HdrRequestID), "router assigns a request id")
	assert.Equal(t, "5", resp.Header.Get(wire.HdrTokens))
	assert.NotEmpty(t, resp.Data)
	again, err := e.nc.Request(subject.Default.Infer(wire.CapGenerate), []byte("hello"), 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, string(resp.Data), string(again.Data), "synthetic output is deterministic")
}

func TestWholeAndStreamedAnswers(t *testing.T) {
	embed := record.Model{ModelID: "emb", Capabilities: []string{wire.CapEmbed}}
	e := start(t,
		node("gen-1", "us-west", wire.PrivacyInternal, synthetic.Config{Tokens: 8}),
		node("emb-1", "us-west", wire.PrivacyInternal, synthetic.Config{}, embed))
	assert.Equal(t, "emb-1", e.servedBy(client.Request{Capability: wire.CapEmbed, Body: []byte("vectorise me")}), "only emb-1 serves embed")

	st, err := e.c.InferStream(context.Background(), client.Request{Capability: wire.CapGenerate, Body: []byte("stream please")})
	require.NoError(t, err)
	defer st.Close()
	seq := 0
	for ch, err := range st.Chunks() {
		require.NoError(t, err)
		assert.Equal(t, seq, ch.Seq)
		assert.Equal(t, "gen-1", ch.Node)
		seq++
	}
	assert.Equal(t, 8, seq)
	res, err := st.Result()
	require.NoError(t, err)
	assert.Equal(t, 8, res.Tokens)
}

// The stream on the wire: chunks with Fed-Seq 0..n-1, then the empty final.
func TestStreamWireFormat(t *testing.T) {
	e := start(t, node("gen-1", "us-west", wire.PrivacyInternal, synthetic.Config{Tokens: 6}))
	inbox := nats.NewInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	require.NoError(t, err)
	msg := nats.NewMsg(subject.Default.Infer(wire.CapGenerate))
	msg.Reply = inbox
	msg.Header.Set(wire.HdrStream, "true")
	msg.Data = []byte("x")
	require.NoError(t, e.nc.PublishMsg(msg))
	for i := 0; ; i++ {
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		assert.Equal(t, strconv.Itoa(i), m.Header.Get(wire.HdrSeq))
		assert.Equal(t, "gen-1", m.Header.Get(wire.HdrNode))
		if len(m.Data) == 0 {
			assert.Equal(t, wire.StatusDone, m.Header.Get(wire.HdrStatus))
			assert.Equal(t, 6, i, "6 chunks then the sentinel")
			break
		}
	}
}

func TestNobodyServesCapability(t *testing.T) {
	e := start(t, node("gen-1", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	t0 := time.Now()
	_, err := e.infer(client.Request{Capability: "custom.nobody"})
	assert.Equal(t, wire.CodeNoCapacity, codeOf(err), "%v", err)
	assert.Less(t, time.Since(t0), time.Second, "answered, not timed out")
	_, err = e.infer(client.Request{Model: "no-such-model"})
	assert.Equal(t, wire.CodeNotFound, codeOf(err), "%v", err)
}

func TestStoppedNodeIsNotChosen(t *testing.T) {
	e := start(t,
		node("a", "us-west", wire.PrivacyInternal, synthetic.Config{}),
		node("b", "us-west", wire.PrivacyInternal, synthetic.Config{}))
	require.NoError(t, e.mesh.StopNode("a"))
	natsembed.Eventually(t, 5*time.Second, func() error {
		for _, c := range e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}}).Candidates {
			if c.NodeID == "a" {
				return errors.New("a deregistered node leaves the router's view")
			}
		}
		return nil
	})
	for i := 0; i < 20; i++ {
		assert.Equal(t, "b", e.servedBy(client.Request{}))
	}
}

func TestStatsCountWhatHappened(t *testing.T) {
	e := start(t, node("gen-1", "us-west", wire.PrivacyInternal, synthetic.Config{Tokens: 3}))
	// Two successes: the node becomes healthy, so the mesh is ready (DESIGN §7).
	for i := 0; i < 2; i++ {
		_, err := e.infer(client.Request{Tenant: "acme"})
		require.NoError(t, err)
	}
	_, err := e.infer(client.Request{Capability: "custom.nobody", Tenant: "acme"})
	require.Error(t, err)
	natsembed.Eventually(t, 5*time.Second, func() error {
		s := e.stats()
		return natsembed.Check(s.TotalRequests == 3 && s.SuccessfulRequests == 2 && s.FailedRequests == 1 && s.TotalTokens == 6 &&
			s.Tenants["acme"].TotalRequests == 3 && s.Nodes["gen-1"].SuccessfulRequests == 2, "stats: %+v", s)
	})
	assert.Equal(t, record.MeshReady, e.stats().State)
}
