package devmesh

import (
	"time"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Demo model ids.
const (
	DemoChatModel  = "llama-3-8b"
	DemoCodeModel  = "qwen-coder-7b"
	DemoEmbedModel = "bge-small"
)

// DemoNodes are the three synthetic nodes `fedmesh dev` runs: a GPU node in
// us-west, a GPU node in eu-west cleared for confidential data, and a cheaper
// CPU-only node in ap-south. Their delays differ so routing has something to
// decide; every answer stays under the 1 s that makes a node degraded.
func DemoNodes() []nodeagent.Config {
	chat := record.Model{ModelID: DemoChatModel, Name: "Llama 3 8B Instruct", Version: "3.0",
		Capabilities: []string{wire.CapGenerate}, Parameters: "8B", Quantization: "fp16"}
	code := record.Model{ModelID: DemoCodeModel, Name: "Qwen2.5 Coder 7B", Version: "2.5",
		Capabilities: []string{wire.CapCode, wire.CapGenerate}, Parameters: "7B", Quantization: "q8_0"}
	embed := record.Model{ModelID: DemoEmbedModel, Name: "BGE small en", Version: "1.5",
		Capabilities: []string{wire.CapEmbed}, Parameters: "33M"}
	node := func(id, region string, gpu bool, cost float64, clearance wire.Privacy, ttft, perToken time.Duration, models ...record.Model) nodeagent.Config {
		c := nodeagent.DefaultConfig()
		c.NodeID, c.Region, c.Zone = id, region, region+"a"
		c.GPU, c.Cost, c.Clearance = gpu, cost, clearance
		c.MaxConcurrency = 16
		c.Models = models
		c.Labels = map[string]string{"demo": "true"}
		c.Backend = synthetic.New(synthetic.Config{TTFT: ttft, TokenDelay: perToken, Tokens: 24})
		return c
	}
	return []nodeagent.Config{
		node("us-west-gpu-1", "us-west", true, 0.6, wire.PrivacyInternal, 30*time.Millisecond, 15*time.Millisecond, chat, code, embed),
		node("eu-west-gpu-1", "eu-west", true, 0.8, wire.PrivacyConfidential, 40*time.Millisecond, 20*time.Millisecond, chat, embed),
		node("ap-south-cpu-1", "ap-south", false, 0.2, wire.PrivacyInternal, 120*time.Millisecond, 30*time.Millisecond, chat, code),
	}
}
