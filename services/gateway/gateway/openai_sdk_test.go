package gateway

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOpenAISDKAgainstFakeMesh runs e2e/openai/client.mjs (the official
// openai npm package) against this gateway in front of the fake mesh. The
// same script runs against a real mesh in services/fedmesh/e2e, which also
// installs the npm packages. Without node the test skips, unless
// FEDMESH_REQUIRE_NODE is set (CI): then a missing node is a failure.
func TestOpenAISDKAgainstFakeMesh(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("FEDMESH_REQUIRE_NODE") != "" {
			t.Fatalf("node not found and FEDMESH_REQUIRE_NODE is set: %v", err)
		}
		t.Skip("node is not installed")
	}
	dir, err := filepath.Abs(filepath.Join("..", "e2e", "openai"))
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		t.Skip("run `npm install` in e2e/openai first")
	}
	e := newEnv(t)
	run := func(unknownModel string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "client.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+e.base+"/v1", "OPENAI_API_KEY="+keyAcme,
			"FED_MODEL="+modelChat, "FED_EMBED_MODEL="+modelEmbed, "FED_UNKNOWN_MODEL="+unknownModel)
		out, err := cmd.CombinedOutput()
		t.Logf("client.mjs:\n%s", out)
		return string(out), err
	}
	out, err := run(modelUnknown)
	require.NoError(t, err, "the openai SDK checks failed")
	require.Contains(t, out, "all 6 checks passed")

	// The script can fail: a "unknown" model that exists is not a 404.
	out, err = run(modelChat)
	require.Error(t, err)
	require.Contains(t, out, "FAIL 404 for an unknown model")
}
