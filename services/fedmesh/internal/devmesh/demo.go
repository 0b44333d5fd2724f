package devmesh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/openai"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Demo model ids.
const (
	DemoChatModel  = "llama-3-8b"
	DemoCodeModel  = "qwen-coder-7b"
	DemoEmbedModel = "bge-small"
	// The media node's models: speech to text, text to speech, images.
	DemoTranscribeModel = "whisper-small"
	DemoSpeechModel     = "piper-en"
	DemoImageModel      = "sdxl-turbo"
)

// DemoMediaNode is the demo node of the binary capabilities (transcribe,
// synthesize, imagegen), so every gateway endpoint answers on `make run`.
// It is synthetic in both demos (a simulated vLLM serves text only);
// its inputs may be of any size up to the body cap (they come out of band,
// through fed_blobs), and a speech answer is one second of 16 kHz audio.
const DemoMediaNode = "us-west-media-1"

// demoSpeechSamples is the length of a synthetic speech answer: one
// sample per token, one second at 16 kHz.
const demoSpeechSamples = 16000

// DemoNodes are the synthetic nodes `fedmesh dev` runs: a GPU node in
// us-west, a GPU node in eu-west cleared for confidential data, a cheaper
// CPU-only node in ap-south, and a GPU media node in us-west
// (DemoMediaNode). Their delays differ so routing has something to decide;
// every answer stays under the 1 s that makes a node degraded.
func DemoNodes() []nodeagent.Config {
	chat := record.Model{ModelID: DemoChatModel, Name: "Llama 3 8B Instruct", Version: "3.0",
		Capabilities: []string{wire.CapGenerate}, Parameters: "8B", Quantization: "fp16"}
	code := record.Model{ModelID: DemoCodeModel, Name: "Qwen2.5 Coder 7B", Version: "2.5",
		Capabilities: []string{wire.CapCode, wire.CapGenerate}, Parameters: "7B", Quantization: "q8_0"}
	embed := record.Model{ModelID: DemoEmbedModel, Name: "BGE small en", Version: "1.5",
		Capabilities: []string{wire.CapEmbed}, Parameters: "33M"}
	transcribe := record.Model{ModelID: DemoTranscribeModel, Name: "Whisper small", Version: "1",
		Capabilities: []string{wire.CapTranscribe}, Parameters: "244M"}
	speech := record.Model{ModelID: DemoSpeechModel, Name: "Piper en_US", Version: "1",
		Capabilities: []string{wire.CapSynthesize}, Parameters: "20M"}
	image := record.Model{ModelID: DemoImageModel, Name: "SDXL Turbo", Version: "1.0",
		Capabilities: []string{wire.CapImagegen}, Parameters: "3.5B", Quantization: "fp16"}
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
	media := node(DemoMediaNode, "us-west", true, 0.7, wire.PrivacyInternal, 50*time.Millisecond, 0, transcribe, speech, image)
	media.Backend = synthetic.New(synthetic.Config{TTFT: 50 * time.Millisecond, Tokens: 24,
		TokensByModel: map[string]int{DemoSpeechModel: demoSpeechSamples}})
	return []nodeagent.Config{
		node("us-west-gpu-1", "us-west", true, 0.6, wire.PrivacyInternal, 30*time.Millisecond, 15*time.Millisecond, chat, code, embed),
		node("eu-west-gpu-1", "eu-west", true, 0.8, wire.PrivacyConfidential, 40*time.Millisecond, 20*time.Millisecond, chat, embed),
		node("ap-south-cpu-1", "ap-south", false, 0.2, wire.PrivacyInternal, 120*time.Millisecond, 30*time.Millisecond, chat, code),
		media,
	}
}

// DemoSimTokens is the typical answer length of the simulated demo
// servers, like the synthetic demo nodes' 24 tokens.
const DemoSimTokens = 24

// demoProfiles is each demo node's simulated server.
var demoProfiles = map[string]simserver.Profile{
	"us-west-gpu-1": simserver.H100, "eu-west-gpu-1": simserver.A10, "ap-south-cpu-1": simserver.CPU}

// SimDemoNodes are DemoNodes in front of simulated vLLM servers
// (simserver) instead of synthetic backends, one server per node on a
// free loopback port, started here: us-west-gpu-1 on an h100 profile,
// eu-west-gpu-1 on an a10, ap-south-cpu-1 on a cpu (batch of 4, about
// 180 ms a token: its answers take seconds, so health rates it degraded
// and its requests queue in the server, as a real CPU node's would).
// Each node reaches its server through the OpenAI-compatible backend, as
// it would a vLLM, and continues lost streams with continue_final_message.
// The media node (DemoMediaNode) stays synthetic: a simulated vLLM serves
// text only.
// The caller stops the servers (StopSimServers) once the mesh has stopped.
func SimDemoNodes(ctx context.Context, seed uint64, log zerolog.Logger) ([]nodeagent.Config, []*simserver.Server, error) {
	nodes := DemoNodes()
	servers := make([]*simserver.Server, 0, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		p, ok := demoProfiles[n.NodeID]
		if !ok { // the media node
			continue
		}
		p.OutputTokens = DemoSimTokens
		models := make([]string, len(n.Models))
		for j, m := range n.Models {
			models[j] = m.ModelID
		}
		srv, err := simserver.Start(ctx, simserver.Config{Addr: "127.0.0.1:0", Profile: p, Seed: seed, Models: models,
			Log: logging.Component(log, "simserver").With().Str(logging.KeyNode, n.NodeID).Logger()})
		if err != nil {
			return nil, nil, errors.Join(fmt.Errorf("devmesh: simserver for %s: %w", n.NodeID, err), StopSimServers(servers))
		}
		servers = append(servers, srv)
		b, err := openai.New(openai.Config{BaseURL: srv.URL(), Continue: true, MaxConns: n.MaxConcurrency})
		if err != nil {
			return nil, nil, errors.Join(fmt.Errorf("devmesh: backend of %s: %w", n.NodeID, err), StopSimServers(servers))
		}
		n.Backend = b
		// As a config file sets up an openai node: scrape the server's
		// load, and time its first token before the first request.
		n.MetricsURL = nodeagent.DefaultMetricsURL(srv.URL())
		n.Warmup = true
		n.Labels["simserver"] = p.Name
	}
	return nodes, servers, nil
}

// StopSimServers stops the servers SimDemoNodes started.
func StopSimServers(servers []*simserver.Server) error {
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}
