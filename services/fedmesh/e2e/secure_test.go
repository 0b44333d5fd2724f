package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// violations counts permission violations by connection.
type violations struct {
	mu  sync.Mutex
	by  map[string][]string
	all int
}

func (v *violations) hear(part string, err error) {
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.by == nil {
		v.by = map[string][]string{}
	}
	v.by[part] = append(v.by[part], err.Error())
	v.all++
}

func (v *violations) snapshot() (int, map[string][]string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string][]string{}
	for k, s := range v.by {
		out[k] = append([]string(nil), s...)
	}
	return v.all, out
}

// The whole mesh in operator mode, every part on its own credential: the
// reference scenarios run with zero permission violations, and a node
// credential cleared for internal whose agent claims restricted receives
// no confidential request (its server refuses the subscriptions and the
// registration, whatever its config says).
func TestSecuredMesh(t *testing.T) {
	cleared := node("eu-conf", "eu", wire.PrivacyConfidential, synthetic.Config{Tokens: 4})
	plain := node("us-int", "us", wire.PrivacyInternal, synthetic.Config{Tokens: 4})
	// the rogue's credential says internal, whatever its agent claims
	rogueCreds := func(base func(string, string, *nodeagent.Config) ([]nats.Option, error), d *auth.Dir) func(string, string, *nodeagent.Config) ([]nats.Option, error) {
		return func(service, id string, n *nodeagent.Config) ([]nats.Option, error) {
			if n != nil && n.NodeID == "rogue" {
				o, err := d.ConnOption(auth.User{Role: auth.RoleNode, NodeID: "rogue", Region: "us", Clearance: wire.PrivacyInternal})
				return []nats.Option{o}, err
			}
			return base(service, id, n)
		}
	}
	sm := startSecured(t, rogueCreds, cleared, plain) // the first requests below wait until the nodes are routable
	mesh, d, s, v := sm.mesh, sm.d, sm.s, sm.v
	// a client of tenant acme, as DIR/dev-client.creds would connect
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(sm.dir+"/dev-client.creds"),
		nats.CustomInboxPrefix("_INBOX.acme"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { v.hear("client", err) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c, err := client.New(nc, client.WithTenant("acme"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	infer := func(r client.Request) (*client.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if r.Capability == "" {
			r.Capability = wire.CapGenerate
		}
		if r.Body == nil {
			r.Body = []byte("hello")
		}
		return c.Infer(ctx, r)
	}
	require.Eventually(t, func() bool {
		r, err := infer(client.Request{Privacy: "confidential"})
		return err == nil && r.Node == "eu-conf"
	}, 10*time.Second, 100*time.Millisecond, "the mesh serves a confidential request on the cleared node")
	for range 5 {
		r, err := infer(client.Request{})
		require.NoError(t, err)
		assert.Contains(t, []string{"eu-conf", "us-int"}, r.Node)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	st, err := c.InferStream(ctx2, client.Request{Capability: wire.CapGenerate, Body: []byte("stream me")})
	require.NoError(t, err)
	n := 0
	for _, err := range st.Chunks() {
		require.NoError(t, err)
		n++
	}
	st.Close()
	assert.Equal(t, 4, n)
	// a silent request's question (§3.8): the client may ask it, routers
	// and nodes may hear it; nobody holds this id, so nobody answers
	_, err = nc.Request(subject.Default.Held("nobody-holds-this"), nil, 300*time.Millisecond)
	assert.ErrorIs(t, err, nats.ErrTimeout)
	count, by := v.snapshot()
	assert.Zero(t, count, "permission violations in normal operation: %v", by)

	// A rogue: credential cleared internal, agent configured restricted.
	rogue := node("rogue", "us", wire.PrivacyRestricted, synthetic.Config{Tokens: 4})
	rogue.HeartbeatInterval = hbInterval
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	err = mesh.AddNode(rctx, rogue)
	require.Error(t, err, "a node that claims more than its credential allows cannot register")
	count, by = v.snapshot()
	assert.NotEmpty(t, by["fedmesh-nodeagent-rogue"], "the server refused the rogue's subscriptions and registration")
	assert.Equal(t, len(by["fedmesh-nodeagent-rogue"]), count, "and nobody else's")
	op, err := d.ConnOption(auth.User{Role: auth.RoleOperator})
	require.NoError(t, err)
	onc, err := nats.Connect(s.ClientURL(), op, nats.CustomInboxPrefix("_INBOX.operator"))
	require.NoError(t, err)
	t.Cleanup(onc.Close)
	kv := natsembed.BucketsForTest(t, onc)
	_, gerr := kv.Catalog.Get(context.Background(), buckets.NodeKey("rogue"))
	assert.Error(t, gerr, "no catalog record for the rogue")
	for range 5 {
		r, err := infer(client.Request{Privacy: "confidential"})
		require.NoError(t, err)
		assert.Equal(t, "eu-conf", r.Node, "confidential data only on the cleared node")
	}
}
