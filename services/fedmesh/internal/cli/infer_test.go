package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// runInfer runs `fedmesh infer args...` against s with stdin and returns
// stdout and stderr.
func runInfer(t *testing.T, s *server.Server, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot()
	root.SetIn(stdin)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--nats-url", s.ClientURL(), "--timeout", "20s", "infer"}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// `fedmesh infer - < file` carries a body of any size up to --max-body (out
// of band when it does not fit a message), and --out writes a binary
// answer as it is.
func TestInferLargeInputAndOut(t *testing.T) {
	s := startDemoMesh(t)
	dir := t.TempDir()
	audio := filepath.Join(dir, "audio.bin")
	b := make([]byte, 5<<20)
	_, err := rand.Read(b)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(audio, b, 0o600))
	open := func() *os.File {
		f, err := os.Open(audio)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}

	var out, errOut string
	natsembed.Eventually(t, 0, func() error { // until the media node is routable
		out, errOut, err = runInfer(t, s, open(), "-c", "transcribe", "-v", "-")
		return err
	})
	assert.Contains(t, out, `{"text":`)
	assert.Contains(t, errOut, "node us-west-media-1")

	// the same from a pipe (size unknown)
	out, _, err = runInfer(t, s, io.MultiReader(open()), "-c", "transcribe", "-")
	require.NoError(t, err)
	assert.Contains(t, out, `{"text":`)

	wav := filepath.Join(dir, "speech.wav")
	out, errOut, err = runInfer(t, s, nil, "-c", "synthesize", "--out", wav, "-v", "hello")
	require.NoError(t, err)
	assert.Empty(t, out, "the answer went to the file")
	got, err := os.ReadFile(wav)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(got, []byte("RIFF")), "a WAV file")
	assert.Len(t, got, 44+2*16000)
	assert.Contains(t, errOut, "32044 bytes")

	_, _, err = runInfer(t, s, open(), "-c", "transcribe", "--max-body", "1048576", "-")
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "fedmesh 413: request body of 5242880 bytes is larger than the limit of 1048576 bytes"), err.Error())
}
