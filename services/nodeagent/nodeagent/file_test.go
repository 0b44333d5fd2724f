package nodeagent

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestLoadFileExample(t *testing.T) {
	fc, err := LoadFile("testdata/node.yaml")
	require.NoError(t, err)
	var askedFor string
	c, err := fc.Config(func(k string) (string, bool) { askedFor = k; return "sk-xyz", true })
	require.NoError(t, err)
	assert.Equal(t, "VLLM_API_KEY", askedFor)
	assert.Equal(t, "gpu-box-1", c.NodeID)
	assert.Equal(t, "eu-west-1", c.Region)
	assert.Equal(t, "eu-west-1a", c.Zone)
	assert.Equal(t, wire.PrivacyConfidential, c.Clearance)
	assert.InDelta(t, 0.6, c.Cost, 1e-9)
	assert.True(t, c.GPU)
	assert.Equal(t, 16, c.MaxConcurrency)
	assert.Equal(t, time.Second, c.HeartbeatInterval)
	assert.Equal(t, 30*time.Second, c.DrainTimeout)
	assert.Equal(t, 10*time.Second, c.ReplayKeep)
	assert.Equal(t, DefaultReplayChunks, c.ReplayChunks, "not in the file: the default")
	assert.Equal(t, map[string]string{"rack": "r12"}, c.Labels)
	assert.Equal(t, []record.Model{
		{ModelID: "llama-3-8b", Name: "Llama 3 8B Instruct", Capabilities: []string{"generate", "code"}, Parameters: "8B", Quantization: "fp16"},
		{ModelID: "bge-small", Capabilities: []string{"embed"}},
	}, c.Models)
	assert.Equal(t, "openai", c.Backend.Name())
	assert.NotContains(t, c.Backend.(interface{ String() string }).String(), "sk-xyz")
}

func TestParseFileNamesTheBadField(t *testing.T) {
	base := "node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"
	cases := []struct {
		name, doc, says string
	}{
		{"unknown field", base + "max_concurency: 3\n", "max_concurency"},
		{"clearance", base + "clearance: secret\n", "clearance"},
		{"cost", base + "cost: 2\n", "cost"},
		{"duration", base + "drain_timeout: soon\n", "drain_timeout"},
		{"replay chunks", base + "replay_chunks: -1\n", "replay_chunks"},
		{"replay keep", base + "replay_keep: -1s\n", "replay_keep"},
		{"backend type", base + "backend: {type: triton}\n", "backend.type"},
		{"openai needs url", base + "backend: {type: openai}\n", "backend.url"},
		{"failure rate", base + "backend: {failure_rate: 3}\n", "failure_rate"},
		{"model id", "node_id: n1\nregion: r1\nmodels: [{model_id: a.b, capabilities: [generate]}]\n", "model_id"},
		{"capability", "node_id: n1\nregion: r1\nmodels: [{model_id: m, capabilities: [chat]}]\n", "capabilities"},
		{"not yaml", "node_id: [\n", "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile([]byte(tc.doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.says)
		})
	}
	// Valid on its own but incomplete: Config names what is missing.
	for _, tc := range []struct{ doc, says string }{
		{"region: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n", "node_id"},
		{"node_id: n1\nmodels: [{model_id: m1, capabilities: [generate]}]\n", "region"},
		{"node_id: n1\nregion: r1\n", "models"},
		{"node_id: n1\nregion: r1\nbackend: {type: openai, url: 'ftp://x'}\nmodels: [{model_id: m1, capabilities: [generate]}]\n", "backend.url"},
	} {
		fc, err := ParseFile([]byte(tc.doc))
		require.NoError(t, err)
		_, err = fc.Config(nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.says)
	}
	fc, err := ParseFile([]byte(base + "backend: {tokens: 5, ttft: 10ms}\n"))
	require.NoError(t, err)
	c, err := fc.Config(nil)
	require.NoError(t, err)
	assert.Equal(t, "synthetic", c.Backend.Name())
	assert.Equal(t, DefaultMaxConcurrency, c.MaxConcurrency)
	assert.Equal(t, wire.PrivacyInternal, c.Clearance)
}

func TestParseModels(t *testing.T) {
	ms, err := ParseModels("llama-3:generate,code; bge:embed")
	require.NoError(t, err)
	require.Len(t, ms, 2)
	assert.Equal(t, FileModel{ModelID: "llama-3", Capabilities: []string{"generate", "code"}}, ms[0])
	assert.Equal(t, FileModel{ModelID: "bge", Capabilities: []string{"embed"}}, ms[1])
	for _, bad := range []string{"", "llama", "llama:", "a.b:generate", "m:chat"} {
		_, err := ParseModels(bad)
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "models", bad)
	}
}

// FuzzParseFile: config files are hand-written; any input gives a config or
// an error, never a panic, and an accepted file passes its own checks.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte("node_id: n1\nregion: r1\nmodels: [{model_id: m1, capabilities: [generate]}]\n"))
	f.Add([]byte("backend: {type: openai, url: http://h:1}\ncost: 0.5\n"))
	f.Add([]byte("drain_timeout: 5m\nlabels: {a: b}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fc, err := ParseFile(data)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("error without a message")
			}
			return
		}
		if err := fc.Check(); err != nil {
			t.Fatalf("accepted file fails Check: %v", err)
		}
		c, err := fc.Config(func(string) (string, bool) { return "", false })
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Config returned an invalid config: %v", verr)
			}
		}
	})
}
