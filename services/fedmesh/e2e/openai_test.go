package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// openaiScriptDir holds the Node script that drives the gateway with the
// official openai npm package.
var openaiScriptDir = filepath.Join("..", "..", "gateway", "e2e", "openai")

// needNode returns the node binary, installing the script's npm packages on
// first use. Without Node.js the test skips, unless FEDMESH_REQUIRE_NODE is
// set (CI sets it), where a missing toolchain is a failure, not a skip.
func needNode(t *testing.T) string {
	t.Helper()
	node, nerr := exec.LookPath("node")
	npm, perr := exec.LookPath("npm")
	if nerr != nil || perr != nil {
		if os.Getenv("FEDMESH_REQUIRE_NODE") != "" {
			t.Fatalf("node/npm not found and FEDMESH_REQUIRE_NODE is set: %v %v", nerr, perr)
		}
		t.Skip("node/npm not installed; .ci/run installs them")
	}
	if _, err := os.Stat(filepath.Join(openaiScriptDir, "node_modules", "openai")); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = openaiScriptDir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "npm ci in %s:\n%s", openaiScriptDir, out)
	}
	return node
}

// TestOpenAINodeClient runs the official openai client (Node.js) against a
// real gateway in front of a real mesh: chat, streamed chat, embeddings, the
// models list, 401 for a bad key, 404 for an unknown model and an 8 MB audio
// file to /v1/audio/transcriptions.
func TestOpenAINodeClient(t *testing.T) {
	node := needNode(t)
	s := natsembed.StartForTest(t)
	nodes := devmesh.DemoNodes()
	for i := range nodes {
		nodes[i].HeartbeatInterval = hbInterval
	}
	gc := gateway.DefaultConfig()
	gc.Addr = "127.0.0.1:0"
	gc.Keys = map[string]gateway.Tenant{"e2e-key": {ID: "e2e"}}
	mesh := startMesh(t, devmesh.Options{Server: s, Log: natsembed.Logger(t), Nodes: nodes, Gateway: &gc})
	e := &env{t: t, nc: natsembed.ConnectForTest(t, s)}
	for _, n := range nodes {
		e.waitRoutable(n.NodeID, n.Models[0].Capabilities[0])
	}

	run, cancelRun := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancelRun()
	cmd := exec.CommandContext(run, node, "client.mjs")
	cmd.Dir = openaiScriptDir
	cmd.Env = append(os.Environ(),
		"OPENAI_BASE_URL=http://"+mesh.Gateway.Addr()+"/v1",
		"OPENAI_API_KEY=e2e-key",
		"FED_MODEL="+devmesh.DemoChatModel,
		"FED_EMBED_MODEL="+devmesh.DemoEmbedModel,
		"FED_AUDIO_MODEL="+devmesh.DemoTranscribeModel, // an 8 MB file, through fed_blobs
	)
	out, err := cmd.CombinedOutput()
	t.Logf("client.mjs:\n%s", out)
	require.NoError(t, err, "the openai client script failed")
	require.Contains(t, string(out), "all 7 checks passed")
}
