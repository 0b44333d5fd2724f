package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Out-of-band bodies in operator mode: a tenant's 8 MB body and 8 MB
// answer travel with zero permission violations; another tenant can
// neither list fed_blobs nor read a blob, even knowing its name.
func TestSecuredBlobs(t *testing.T) {
	sc := mediaConfig(synthetic.Config{})
	media := node("media", "us", wire.PrivacyInternal, sc, mediaModels...)
	sm := startSecured(t, nil, media)
	v, connect := sm.v, func(tenant string) *nats.Conn { return sm.client(t, tenant) }
	nc := connect("acme")
	c, err := client.New(nc, client.WithTenant("acme"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	body := randomBody(t, 8<<20)
	var resp *client.Response
	require.Eventually(t, func() bool {
		resp, err = c.Infer(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapTranscribe, Body: body})
		return err == nil
	}, 15*time.Second, 200*time.Millisecond, "8 MB body: %v", err)
	assert.Equal(t, string(expected(t, sc, backend.Call{Capability: wire.CapTranscribe, Model: "whisper", Body: body})), string(resp.Body))
	resp, err = c.Infer(ctxFor(t, 20*time.Second), client.Request{Capability: wire.CapSynthesize, Body: []byte("read this")})
	require.NoError(t, err)
	assert.Len(t, resp.Body, 2*ttsSamples+44)
	count, by := v.snapshot()
	assert.Zero(t, count, "permission violations with blobs both ways: %v", by)

	// Another tenant, holding a blob's name (not its key).
	victim := connect("acme")
	vstore, err := blobs.OpenStore(ctxFor(t, 5*time.Second), victim)
	require.NoError(t, err)
	ref, err := vstore.Put(ctxFor(t, 10*time.Second), blobs.NewName(blobs.RequestPrefix), bytes.NewReader([]byte("acme's secret audio")), blobs.DefaultMaxBytes)
	require.NoError(t, err)
	mallory := connect("mallory")
	mstore, err := blobs.OpenStore(ctxFor(t, 5*time.Second), mallory)
	require.NoError(t, err)
	guess := ref
	guess.Key = bytes.Repeat([]byte{1}, 32)
	_, err = mstore.Bytes(ctxFor(t, 5*time.Second), guess, blobs.DefaultMaxBytes)
	assert.ErrorIs(t, err, blobs.ErrSealed, "the name alone opens nothing")
	js, err := jetstream.New(mallory)
	require.NoError(t, err)
	obs, err := js.ObjectStore(ctxFor(t, 5*time.Second), buckets.Blobs)
	require.NoError(t, err)
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer lcancel()
	_, err = obs.List(lctx)
	assert.Error(t, err, "nobody but the operator lists fed_blobs")
	require.NoError(t, vstore.Delete(ctxFor(t, 5*time.Second), ref.Name))
}
