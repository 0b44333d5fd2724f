package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// noNATS is a URL nothing listens on: the auth commands never connect.
const noNATS = "nats://127.0.0.1:1"

// authMesh is an operator-mode server started from `fedmesh auth init`
// material, and one connection per issued user.
type authMesh struct {
	t   *testing.T
	dir string
	s   *server.Server
	op  *roleConn // the operator: setup and the observer of every delivery
}

func newAuthMesh(t *testing.T) *authMesh {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "auth")
	_, stderr, code := runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	m := &authMesh{t: t, dir: dir, s: natsembed.StartOperatorForTest(t, dir)}
	m.op = m.connect("operator", auth.InboxPrefix(auth.RoleOperator, ""), "operator")
	natsembed.BucketsForTest(t, m.op.nc) // only the operator may create them
	return m
}

// issue runs `fedmesh auth issue DIR args... --out FILE` and returns FILE.
func (m *authMesh) issue(args ...string) string {
	m.t.Helper()
	out := filepath.Join(m.t.TempDir(), strings.Join(args, "_")+".creds")
	_, stderr, code := runCLI(m.t, noNATS, "", append([]string{"auth", "issue", m.dir}, append(args, "--out", out)...)...)
	require.Equal(m.t, 0, code, stderr)
	return out
}

// violation is one "Permissions Violation" the server sent a connection.
type violation struct{ op, subject string }

var violationRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// roleConn is a raw nats.go connection with one user's creds, whose async
// error handler collects the permission violations in order.
type roleConn struct {
	t    *testing.T
	name string
	nc   *nats.Conn
	viol chan violation
	n    int

	mu     sync.Mutex
	onDeny context.CancelFunc // of the pending opCtx
}

// opCtx bounds one JetStream operation: it ends at the first violation, so
// a denied request fails at once instead of waiting for its timeout.
func (c *roleConn) opCtx(within time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	c.mu.Lock()
	c.onDeny = cancel
	c.mu.Unlock()
	return ctx, cancel
}

// connect issues creds for args and connects with inbox prefix inbox.
func (m *authMesh) connect(name, inbox string, args ...string) *roleConn {
	m.t.Helper()
	c := &roleConn{t: m.t, name: name, viol: make(chan violation, 1024)}
	c.nc = natsembed.ConnectForTest(m.t, m.s, nats.UserCredentials(m.issue(args...)), nats.Name(name),
		nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if !errors.Is(err, nats.ErrPermissionViolation) {
				m.t.Logf("%s: async error: %v", name, err)
				return
			}
			// cancel the current operation before reporting the violation:
			// once reported, the test may already have started the next one
			c.mu.Lock()
			if c.onDeny != nil {
				c.onDeny()
			}
			c.mu.Unlock()
			if v := violationRe.FindStringSubmatch(err.Error()); v != nil {
				c.viol <- violation{strings.ToLower(v[1]), v[2]}
			}
		}))
	return c
}

// violations runs act and returns the violations it caused. It publishes a
// sentinel that every role but the operator is denied, and waits for its
// violation: async errors arrive in order, so whatever came before it is
// act's, and nothing of act's can come after.
func (c *roleConn) violations(act func()) []violation {
	c.t.Helper()
	act()
	c.n++
	sentinel := fmt.Sprintf("sentinel.%s.%d", c.name, c.n)
	require.NoError(c.t, c.nc.Publish(sentinel, nil))
	var got []violation
	deadline := time.After(natsembed.WaitFor)
	for {
		select {
		case v := <-c.viol:
			if v.subject == sentinel {
				return got
			}
			got = append(got, v)
		case <-deadline:
			c.t.Fatalf("%s: no violation for the sentinel %s (is the role allowed everything?)", c.name, sentinel)
		}
	}
}

// concrete turns a subscription pattern into a subject it matches.
func concrete(pattern string) string {
	toks := strings.Split(pattern, ".")
	for i, tk := range toks {
		switch tk {
		case "*":
			toks[i] = "w"
		case ">":
			toks[i] = "w.x"
		}
	}
	return strings.Join(toks, ".")
}

type permCase struct {
	conn    string
	kind    string // pub, sub, qsub (queue group)
	subject string
	allowed bool
}

// check proves one case: a denied action gets its violation (and a denied
// publish reaches nobody); an allowed one gets none and delivers: what the
// role publishes reaches the operator, what the operator publishes reaches
// the role's subscription.
func (m *authMesh) check(c *roleConn, pc permCase) {
	m.t.Helper()
	what := fmt.Sprintf("%s %s %s", pc.conn, pc.kind, pc.subject)
	switch pc.kind {
	case "pub":
		watch, err := m.op.nc.SubscribeSync(pc.subject)
		require.NoError(m.t, err)
		defer func() { _ = watch.Unsubscribe() }()
		require.NoError(m.t, m.op.nc.Flush())
		got := c.violations(func() { require.NoError(m.t, c.nc.Publish(pc.subject, []byte(what))) })
		require.NoError(m.t, m.op.nc.Flush())
		if pc.allowed {
			assert.Empty(m.t, got, what)
			msg, err := watch.NextMsg(natsembed.WaitFor)
			if assert.NoError(m.t, err, what+": not delivered") {
				assert.Equal(m.t, what, string(msg.Data))
			}
			return
		}
		assert.Equal(m.t, []violation{{"publish", pc.subject}}, got, what)
		n, _, _ := watch.Pending()
		assert.Zero(m.t, n, what+": a denied publish was delivered")
	case "sub", "qsub":
		var sub *nats.Subscription
		got := c.violations(func() {
			var err error
			if pc.kind == "qsub" {
				sub, err = c.nc.QueueSubscribeSync(pc.subject, "q-"+pc.conn)
			} else {
				sub, err = c.nc.SubscribeSync(pc.subject)
			}
			require.NoError(m.t, err)
			require.NoError(m.t, c.nc.Flush())
		})
		defer func() { _ = sub.Unsubscribe() }()
		if !pc.allowed {
			assert.Equal(m.t, []violation{{"subscription", pc.subject}}, got, what)
			return
		}
		assert.Empty(m.t, got, what)
		subj := concrete(pc.subject)
		require.NoError(m.t, m.op.nc.Publish(subj, []byte(what)))
		msg, err := sub.NextMsg(natsembed.WaitFor)
		if assert.NoError(m.t, err, what+": "+subj+" not delivered") {
			assert.Equal(m.t, what, string(msg.Data))
		}
	default:
		m.t.Fatalf("bad kind %q", pc.kind)
	}
}

// The roles of the table, as connected by every permission test.
type authRoles struct {
	m     *authMesh
	conns map[string]*roleConn
}

func connectRoles(t *testing.T) *authRoles {
	m := newAuthMesh(t)
	r := &authRoles{m: m, conns: map[string]*roleConn{}}
	for _, c := range []struct {
		name, inbox string
		args        []string
	}{
		{"acme", auth.InboxPrefix(auth.RoleClient, "acme"), []string{"client", "--tenant", "acme"}},
		{"umbrella", auth.InboxPrefix(auth.RoleClient, "umbrella"), []string{"client", "--tenant", "umbrella"}},
		{"gateway", auth.InboxPrefix(auth.RoleGateway, "gateway-1"), []string{"gateway", "--name", "gateway-1"}},
		{"router", auth.InboxPrefix(auth.RoleRouter, "router-1"), []string{"router", "--name", "router-1"}},
		{"router-2", auth.InboxPrefix(auth.RoleRouter, "router-2"), []string{"router", "--name", "router-2"}},
		{"catalog", auth.InboxPrefix(auth.RoleCatalog, "catalog-1"), []string{"catalog", "--name", "catalog-1"}},
		{"catalog-2", auth.InboxPrefix(auth.RoleCatalog, "catalog-2"), []string{"catalog", "--name", "catalog-2"}},
		{"health", auth.InboxPrefix(auth.RoleHealth, "health-1"), []string{"health", "--name", "health-1"}},
		{"node-x", auth.InboxPrefix(auth.RoleNode, "node-x"), []string{"node", "--node-id", "node-x", "--region", "eu", "--clearance", "internal"}},
		{"node-y", auth.InboxPrefix(auth.RoleNode, "node-y"), []string{"node", "--node-id", "node-y", "--region", "us", "--clearance", "confidential"}},
	} {
		r.conns[c.name] = m.connect(c.name, c.inbox, c.args...)
	}
	return r
}

var nonOperators = []string{"acme", "umbrella", "gateway", "router", "router-2", "catalog", "catalog-2", "health", "node-x", "node-y"}

func TestAuthPermissionTable(t *testing.T) {
	r := connectRoles(t)
	var cases []permCase
	add := func(conn, kind string, allowed bool, subjects ...string) {
		for _, s := range subjects {
			cases = append(cases, permCase{conn, kind, s, allowed})
		}
	}
	// Node X, cleared internal, in eu.
	add("node-x", "sub", true, "fed.node.node-x.infer.public", "fed.node.node-x.infer.internal", "fed.node.node-x.probe",
		"fed.node.node-x.replay", "fed.node.node-x.status", "fed.cancel.*", "$SRV.>", "_INBOX.node.node-x.>")
	add("node-x", "qsub", true, "fed.node.node-x.infer.internal")
	add("node-x", "sub", false, "fed.node.node-x.infer.confidential", "fed.node.node-x.infer.restricted",
		"fed.node.node-y.infer.internal", "fed.node.node-x.infer.*", "fed.node.*.infer.internal", "fed.node.node-y.probe",
		"fed.node.node-y.replay", "fed.node.node-y.status", "fed.node.*.status", "fed.infer.>", "fed.heartbeat.*", "fed.outcome.*", "_INBOX.>",
		"_INBOX.acme.>", "_INBOX.node.node-y.>", "$KV.fed_catalog.>",
		// nor any requester's inbox: a client's, a service's
		"_INBOX.acme.*", "_INBOX.umbrella.>", "_INBOX.router.router-1.>", "_INBOX.gateway.gateway-1.>",
		"_INBOX.health.health-1.>", "_INBOX.catalog.catalog-1.>", "_INBOX.operator.>")
	// it answers its requesters: tokens to a client or the gateway, acks to
	// a router, probe answers to health, $SRV replies to the operator
	add("node-x", "pub", true, "fed.heartbeat.node-x", "fed.outcome.node-x", "fed.catalog.register.node-x.eu.internal",
		"fed.catalog.deregister.node-x", "_INBOX.acme.tok", "_INBOX.gateway.gateway-1.tok", "_INBOX.router.router-1.ack",
		"_INBOX.health.health-1.probe", "_INBOX.operator.srv")
	add("node-x", "pub", false, "fed.heartbeat.node-y", "fed.outcome.node-y", "fed.catalog.register.node-y.eu.internal",
		"fed.catalog.register.node-x.eu.restricted", "fed.catalog.register.node-x.eu.confidential",
		"fed.catalog.register.node-x.eu.public", "fed.catalog.register.node-x.us.internal", "fed.catalog.deregister.node-y",
		"fed.node.node-y.infer.internal", "fed.infer.generate.acme", "fed.router.failed.node-x", "fed.client.duplicate.node-x",
		"$KV.fed_catalog.nodes.node-x", "$KV.fed_health.nodes.node-x",
		// the open register forms, whose body alone names the node: the operator's
		"fed.catalog.register", "fed.catalog.deregister", "fed.router.failed.node-y", "fed.node.node-y.replay",
		// only routers ask a node whether it holds a request
		"fed.node.node-y.status", "fed.node.node-x.status",
		// nobody asks a node for anything that another node could answer:
		// not another node's inbox (a forged register reply), not catalog's
		"_INBOX.node.node-y.reply", "_INBOX.catalog.catalog-1.reply")
	// Node Y, cleared confidential, in us: one more level, its own names.
	add("node-y", "sub", true, "fed.node.node-y.infer.public", "fed.node.node-y.infer.internal", "fed.node.node-y.infer.confidential")
	add("node-y", "sub", false, "fed.node.node-y.infer.restricted", "fed.node.node-x.infer.public")
	add("node-y", "pub", true, "fed.catalog.register.node-y.us.confidential", "fed.heartbeat.node-y")
	add("node-y", "pub", false, "fed.catalog.register.node-y.us.restricted", "fed.catalog.register.node-y.eu.confidential", "fed.heartbeat.node-x")

	// Client of tenant acme.
	add("acme", "sub", true, "_INBOX.acme.>")
	add("acme", "sub", false, "fed.infer.>", "fed.infer.generate.acme", "fed.node.*.infer.*", "_INBOX.>", "_INBOX.umbrella.>",
		"_INBOX.router.>", "_INBOX.gateway.>", "_INBOX.node.node-x.>", "fed.cancel.*", "fed.outcome.*", "fed.client.duplicate.*", "$SRV.>")
	add("acme", "pub", true, "fed.infer.generate.acme", "fed.infer.custom.mine.acme", "fed.cancel.req-1",
		"fed.client.duplicate.node-x", "fed.node.node-x.replay")
	add("acme", "pub", false, "fed.infer.generate.umbrella", "fed.infer.generate", "fed.infer.custom.mine.umbrella",
		// matches fed.infer.*.acme, but the router reads it as capability
		// custom.acme without a tenant: Fed-Tenant would name any tenant
		"fed.infer.custom.acme",
		"fed.node.node-x.infer.public", "fed.node.node-x.probe", "fed.node.node-x.status", "fed.heartbeat.node-x", "fed.outcome.node-x",
		"fed.catalog.list", "fed.catalog.register.node-x.eu.internal", "fed.router.candidates", "fed.stats", "_INBOX.umbrella.x",
		"$KV.fed_config.router.policy", "$KV.fed_catalog.nodes.node-x", "$JS.API.STREAM.INFO.KV_fed_catalog",
		"$JS.API.STREAM.CREATE.EVIL", "$JS.API.INFO",
		// forged events: a node's outcomes, a router's dispatch failures; registering or removing a node
		"fed.router.failed.node-x", "fed.catalog.register", "fed.catalog.deregister", "fed.catalog.deregister.node-x",
		"fed.node.node-x.infer.restricted")
	add("umbrella", "sub", true, "_INBOX.umbrella.>")
	add("umbrella", "sub", false, "_INBOX.acme.>")
	add("umbrella", "pub", true, "fed.infer.embed.umbrella")
	add("umbrella", "pub", false, "fed.infer.embed.acme", "fed.infer.custom.umbrella")

	// Gateway: names tenants itself.
	add("gateway", "sub", true, "_INBOX.gateway.gateway-1.>")
	add("gateway", "sub", false, "fed.infer.>", "_INBOX.>", "_INBOX.acme.>", "fed.catalog.list",
		"_INBOX.gateway.>", "_INBOX.gateway.gateway-2.>", "_INBOX.router.router-1.>")
	add("gateway", "pub", true, "fed.infer.generate.acme", "fed.infer.custom.mine.umbrella", "fed.cancel.req-1",
		"fed.client.duplicate.node-x", "fed.node.node-x.replay", "fed.catalog.list", "fed.catalog.get", "fed.catalog.find")
	add("gateway", "pub", false, "fed.catalog.register.node-x.eu.internal", "fed.catalog.deregister.node-x",
		"fed.node.node-x.infer.public", "fed.node.node-x.status", "fed.health.list", "fed.stats", "_INBOX.acme.x", "$KV.fed_catalog.nodes.x",
		"fed.outcome.node-x", "fed.router.failed.node-x", "fed.heartbeat.node-x", "fed.catalog.register")

	// Router.
	add("router", "qsub", true, "fed.infer.>", "fed.router.candidates")
	add("router", "sub", true, "fed.outcome.*", "$SRV.>", "_INBOX.router.router-1.>")
	add("router", "sub", false, "fed.heartbeat.*", "fed.node.*.infer.*", "fed.node.*.status", "fed.cancel.*", "_INBOX.>", "_INBOX.acme.>",
		"fed.catalog.register.*.*.*", "fed.router.failed.*",
		// not another router's inbox (its acks, its replies), nor any other instance's
		"_INBOX.router.>", "_INBOX.router.router-2.>", "_INBOX.router.*.>", "_INBOX.catalog.catalog-1.>", "_INBOX.gateway.gateway-1.>")
	add("router-2", "sub", true, "_INBOX.router.router-2.>")
	add("router-2", "sub", false, "_INBOX.router.router-1.>", "_INBOX.router.>")
	add("router", "pub", true, "fed.node.node-x.infer.internal", "fed.node.node-y.infer.restricted", "fed.node.node-x.status", "fed.cancel.req-1",
		"fed.router.unplaced", "fed.router.decisions", "fed.router.failed.node-x", "_INBOX.acme.final", "_INBOX.gateway.final")
	add("router", "pub", false, "fed.heartbeat.node-x", "fed.outcome.node-x", "fed.node.node-x.probe", "fed.infer.generate.acme",
		"fed.catalog.register.node-x.eu.internal", "fed.client.duplicate.node-x", "$KV.fed_health.nodes.node-x",
		"$KV.fed_catalog.nodes.node-x", "$JS.API.STREAM.DELETE.KV_fed_catalog", "$JS.API.STREAM.PURGE.KV_fed_health",
		"$JS.API.STREAM.UPDATE.KV_fed_config")

	// Catalog.
	add("catalog", "qsub", true, "fed.catalog.register.*.*.*", "fed.catalog.deregister.*", "fed.catalog.find",
		"fed.catalog.list", "fed.catalog.get")
	add("catalog", "sub", true, "fed.heartbeat.*", "$SRV.>", "_INBOX.catalog.catalog-1.>")
	add("catalog", "sub", false, "fed.catalog.>", "fed.outcome.*", "fed.infer.>", "_INBOX.>", "_INBOX.catalog.>",
		"_INBOX.catalog.catalog-2.>", "_INBOX.router.router-1.>")
	add("catalog-2", "sub", true, "_INBOX.catalog.catalog-2.>")
	add("catalog-2", "sub", false, "_INBOX.catalog.catalog-1.>")
	add("catalog", "pub", true, "_INBOX.node.node-x.reply")
	add("catalog", "pub", false, "$KV.fed_health.nodes.node-x", "fed.heartbeat.node-x", "fed.node.node-x.probe", "fed.node.node-x.status",
		"$JS.API.STREAM.DELETE.KV_fed_catalog", "$JS.API.STREAM.PURGE.KV_fed_catalog")

	// Health.
	add("health", "sub", true, "fed.heartbeat.*", "fed.outcome.*", "fed.router.failed.*", "fed.router.unplaced",
		"fed.client.duplicate.*", "$SRV.>", "_INBOX.health.health-1.>")
	add("health", "qsub", true, "fed.health.get", "fed.health.list", "fed.stats")
	add("health", "sub", false, "fed.infer.>", "fed.node.*.infer.*", "fed.router.decisions", "_INBOX.>",
		"_INBOX.health.>", "_INBOX.health.health-2.>")
	add("health", "pub", true, "fed.node.node-x.probe", "fed.health.stats", "_INBOX.operator.reply")
	add("health", "pub", false, "fed.node.node-x.infer.public", "fed.node.node-x.status", "$KV.fed_catalog.nodes.node-x", "fed.heartbeat.node-x",
		"$JS.API.STREAM.DELETE.KV_fed_health")

	// Only health publishes its stats event (fedmesh top follows it as the
	// operator, whose "pub" checks above are how it is delivered); no other
	// role may forge or read it.
	add("health", "sub", false, "fed.health.stats")
	for _, c := range []string{"acme", "gateway", "router", "catalog", "node-x"} {
		add(c, "pub", false, "fed.health.stats")
		add(c, "sub", false, "fed.health.stats")
	}

	// Nobody but the operator writes fed_config, or creates, changes or
	// removes a stream.
	for _, c := range nonOperators {
		add(c, "pub", false, "$KV.fed_config.router.policy", "$KV.fed_config.tenants", "$JS.API.STREAM.CREATE.EVIL",
			"$JS.API.STREAM.UPDATE.KV_fed_catalog", "$JS.API.STREAM.DELETE.KV_fed_config", "$JS.API.CONSUMER.DURABLE.CREATE.KV_fed_config.d",
			"$JS.API.STREAM.MSG.DELETE.KV_fed_catalog")
	}

	for _, pc := range cases {
		r.m.check(r.conns[pc.conn], pc)
	}

	// What was denied left no trace.
	js, err := jetstream.New(r.m.op.nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), natsembed.WaitFor)
	defer cancel()
	_, err = js.Stream(ctx, "EVIL")
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	set, err := buckets.Open(ctx, js, 0)
	require.NoError(t, err)
	for _, kv := range []jetstream.KeyValue{set.Catalog, set.Health, set.Config} {
		st, err := kv.Status(ctx)
		require.NoError(t, err)
		assert.Zero(t, st.Values(), "bucket %s was written", kv.Bucket())
	}
}

// Strangers do not get in: no credential, a user signed by a key the
// account does not know (claiming the account), or one from another
// operator's auth dir; and a scoped user whose JWT was edited to claim
// another tenant or clearance fails its signature.
func TestAuthStrangersRefused(t *testing.T) {
	m := newAuthMesh(t)
	other := filepath.Join(t.TempDir(), "other")
	_, stderr, code := runCLI(t, noNATS, "", "auth", "init", other)
	require.Equal(t, 0, code, stderr)
	od, err := auth.Open(other)
	require.NoError(t, err)
	foreign, err := od.Issue(auth.User{Role: auth.RoleOperator})
	require.NoError(t, err)

	d, err := auth.Open(m.dir)
	require.NoError(t, err)
	// a user JWT claiming the FEDMESH account, signed by a key of our own
	fake, err := nkeys.CreateAccount()
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	upub, _ := user.PublicKey()
	useed, _ := user.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name, uc.IssuerAccount = "node-x", d.Account()
	uc.Pub.Allow.Add(">")
	uc.Sub.Allow.Add(">")
	tok, err := uc.Encode(fake)
	require.NoError(t, err)
	forged, err := jwt.FormatUserConfig(tok, useed)
	require.NoError(t, err)

	// a real node credential cleared internal, its claims edited to say restricted
	real, err := d.Issue(auth.User{Role: auth.RoleNode, NodeID: "node-x", Region: "eu", Clearance: wire.PrivacyInternal})
	require.NoError(t, err)
	rtok, err := jwt.ParseDecoratedJWT(real)
	require.NoError(t, err)
	parts := strings.Split(rtok, ".")
	require.Len(t, parts, 3)
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	edited := strings.Replace(string(claims), "clearance:internal", "clearance:restricted", 1)
	require.NotEqual(t, string(claims), edited)
	rkp, err := nkeys.ParseDecoratedNKey(real)
	require.NoError(t, err)
	rseed, _ := rkp.Seed()
	// written by hand: jwt.FormatUserConfig refuses a JWT whose signature fails
	tampered := []byte("-----BEGIN NATS USER JWT-----\n" + parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(edited)) +
		"." + parts[2] + "\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n" + string(rseed) +
		"\n------END USER NKEY SEED------\n")

	write := func(name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	// the same credential unedited gets in
	nc, err := nats.Connect(m.s.ClientURL(), nats.UserCredentials(write("real.creds", real)), nats.NoReconnect())
	require.NoError(t, err, "the untouched node credential")
	nc.Close()
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no credential", nil},
		{"user and password", []nats.Option{nats.UserInfo("operator", "operator")}},
		{"a user signed by an unknown key", []nats.Option{nats.UserCredentials(write("forged.creds", forged))}},
		{"another operator's credential", []nats.Option{nats.UserCredentials(write("foreign.creds", foreign))}},
		{"an edited credential", []nats.Option{nats.UserCredentials(write("tampered.creds", tampered))}},
	} {
		nc, err := nats.Connect(m.s.ClientURL(), append(tc.opts, nats.Timeout(natsembed.WaitFor), nats.NoReconnect())...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", tc.name)
			continue
		}
		assert.Contains(t, strings.ToLower(err.Error()), "authorization violation", tc.name)
	}
}

// kvPut writes key in bucket as c, as the services do (jetstream KV with
// the role's inbox); a denied write has no ack and times out.
func kvPut(t *testing.T, c *roleConn, bucket, key string, within time.Duration) error {
	t.Helper()
	js, err := jetstream.New(c.nc)
	require.NoError(t, err)
	ctx, cancel := c.opCtx(within)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", bucket, err)
	}
	_, err = kv.Put(ctx, key, []byte(`{"by":"`+c.name+`"}`))
	return err
}

func TestAuthKVWrites(t *testing.T) {
	r := connectRoles(t)
	const denyWait = natsembed.WaitFor // ends at the violation
	cases := []struct {
		conn, bucket string
		allowed      bool
	}{
		{"catalog", buckets.Catalog, true},
		{"health", buckets.Health, true},
		{"router", buckets.Health, false},
		{"router", buckets.Catalog, false},
		{"router", buckets.Config, false},
		{"catalog", buckets.Health, false},
		{"catalog", buckets.Config, false},
		{"health", buckets.Catalog, false},
		{"health", buckets.Config, false},
		{"node-x", buckets.Catalog, false},
		{"gateway", buckets.Catalog, false},
		{"acme", buckets.Config, false},
	}
	for _, tc := range cases {
		c := r.conns[tc.conn]
		key := "nodes.by-" + tc.conn
		var err error
		got := c.violations(func() { err = kvPut(t, c, tc.bucket, key, denyWait) })
		if tc.allowed {
			assert.NoError(t, err, "%s writes %s", tc.conn, tc.bucket)
			assert.Empty(t, got, "%s writes %s", tc.conn, tc.bucket)
		} else {
			assert.Error(t, err, "%s writes %s", tc.conn, tc.bucket)
			assert.NotEmpty(t, got, "%s writes %s: no violation", tc.conn, tc.bucket)
		}
		js, jerr := jetstream.New(r.m.op.nc)
		require.NoError(t, jerr)
		kv, kerr := js.KeyValue(context.Background(), tc.bucket)
		require.NoError(t, kerr)
		_, gerr := kv.Get(context.Background(), key)
		if tc.allowed {
			assert.NoError(t, gerr, "%s's write to %s is not stored", tc.conn, tc.bucket)
		} else {
			assert.ErrorIs(t, gerr, jetstream.ErrKeyNotFound, "%s's denied write to %s is stored", tc.conn, tc.bucket)
		}
	}
	// The operator writes fed_config and creates streams.
	assert.NoError(t, kvPut(t, r.m.op, buckets.Config, "router.policy", natsembed.WaitFor))
	js, err := jetstream.New(r.m.op.nc)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "OPS", Subjects: []string{"ops.>"}})
	assert.NoError(t, err)
}

// watchAll follows bucket as c with KeyValue.WatchAll, as buckets.Follow
// does: it returns the initial keys (up to the nil marker) and the next
// update, or an error.
func watchAll(c *roleConn, bucket string, within time.Duration, then func()) (initial []string, next string, err error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := c.opCtx(within)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, "", fmt.Errorf("open: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				if then == nil {
					return initial, "", nil
				}
				then()
				then = nil
				continue
			}
			if then == nil {
				return initial, e.Key(), nil
			}
			initial = append(initial, e.Key())
		case <-ctx.Done():
			return initial, "", fmt.Errorf("watch %s: %w after %d values", bucket, ctx.Err(), len(initial))
		}
	}
}

func TestAuthKVWatch(t *testing.T) {
	r := connectRoles(t)
	opjs, err := jetstream.New(r.m.op.nc)
	require.NoError(t, err)
	ctx := context.Background()
	put := func(bucket, key string, size int) {
		kv, err := opjs.KeyValue(ctx, bucket)
		require.NoError(t, err)
		_, err = kv.Put(ctx, key, make([]byte, size))
		require.NoError(t, err)
	}
	// More than the ordered consumer's flow-control window (2 MiB): a watcher
	// that may not answer flow control stalls half-way.
	for i := range 48 {
		put(buckets.Catalog, fmt.Sprintf("nodes.n%02d", i), 64<<10)
	}
	put(buckets.Health, "nodes.n00", 10)
	put(buckets.Config, "router.policy", 10)

	// Keys in each bucket; every allowed watch adds one.
	have := map[string]int{buckets.Catalog: 48, buckets.Health: 1, buckets.Config: 1}
	n := 0
	cases := []struct {
		conn, bucket string
		allowed      bool
	}{
		{"router", buckets.Catalog, true},
		{"router", buckets.Health, true},
		{"router", buckets.Config, true},
		{"health", buckets.Catalog, true},
		{"health", buckets.Health, true},
		{"catalog", buckets.Catalog, true},
		{"catalog", buckets.Health, false},
		{"health", buckets.Config, false},
		{"node-x", buckets.Catalog, false},
		{"gateway", buckets.Catalog, false},
		{"acme", buckets.Catalog, false},
	}
	for _, tc := range cases {
		what := tc.conn + " watches " + tc.bucket
		c := r.conns[tc.conn]
		within := 10 * time.Second // a denied watch ends at its violation
		n++
		key := fmt.Sprintf("nodes.later%d", n)
		if tc.bucket == buckets.Config {
			key = fmt.Sprintf("later%d", n)
		}
		var initial []string
		var next string
		var werr error
		got := c.violations(func() {
			initial, next, werr = watchAll(c, tc.bucket, within, func() { put(tc.bucket, key, 10) })
		})
		if !tc.allowed {
			// the watch fails; its violation may land after the sentinel on
			// a loaded machine (a JetStream request the server denies reads
			// as a timeout to the client), so only the failure is asserted
			assert.Error(t, werr, what)
			if len(got) == 0 {
				t.Logf("%s: denied, violation not seen before the sentinel", what)
			}
			continue
		}
		require.NoError(t, werr, what)
		assert.Empty(t, got, what)
		assert.Len(t, initial, have[tc.bucket], what)
		assert.Equal(t, key, next, what)
		have[tc.bucket]++
	}

	// A node follows its own catalog record, and no other.
	x := r.conns["node-x"]
	put(buckets.Catalog, "nodes.node-x", 10)
	for _, tc := range []struct {
		key     string
		allowed bool
	}{{"nodes.node-x", true}, {"nodes.node-y", false}, {"nodes.*", false}, {">", false}} {
		var werr error
		var seen string
		got := x.violations(func() {
			js, err := jetstream.New(x.nc)
			require.NoError(t, err)
			// opening is allowed: not under opCtx, which a late denial of an
			// earlier step could cancel
			octx, ocancel := context.WithTimeout(context.Background(), natsembed.WaitFor)
			defer ocancel()
			kv, err := js.KeyValue(octx, buckets.Catalog)
			require.NoError(t, err, "node opens fed_catalog")
			wctx, cancel := x.opCtx(natsembed.WaitFor)
			defer cancel()
			w, err := kv.Watch(wctx, tc.key)
			if err != nil {
				werr = err
				return
			}
			defer func() { _ = w.Stop() }()
			select {
			case e := <-w.Updates():
				if e != nil {
					seen = e.Key()
				}
			case <-wctx.Done():
				werr = wctx.Err()
			}
		})
		if tc.allowed {
			assert.NoError(t, werr)
			assert.Empty(t, got)
			assert.Equal(t, "nodes.node-x", seen)
		} else {
			assert.Error(t, werr, "node-x watches %s", tc.key)
			assert.NotEmpty(t, got, "node-x watches %s: no violation", tc.key)
		}
	}

	// Get, as health's conflict re-read does.
	h := r.conns["health"]
	got := h.violations(func() {
		js, err := jetstream.New(h.nc)
		require.NoError(t, err)
		kv, err := js.KeyValue(ctx, buckets.Health)
		require.NoError(t, err)
		e, err := kv.Get(ctx, "nodes.n00")
		require.NoError(t, err)
		assert.Len(t, e.Value(), 10)
	})
	assert.Empty(t, got)
}

// Every service opens all three buckets at start (buckets.EnsureConn):
// under its permissions that works once the operator made them.
func TestAuthServicesOpenBuckets(t *testing.T) {
	r := connectRoles(t)
	for _, name := range []string{"router", "catalog", "health"} {
		c := r.conns[name]
		got := c.violations(func() {
			ctx, cancel := context.WithTimeout(context.Background(), natsembed.WaitFor)
			defer cancel()
			_, err := buckets.EnsureConn(ctx, c.nc, buckets.Options{})
			assert.NoError(t, err, name)
		})
		assert.Empty(t, got, name)
	}
}

// Request-reply between roles works with explicit _INBOX.> publish rights
// (no allow_responses), and a reply subject a client picks cannot make a
// service publish anywhere else.
func TestAuthRequestReply(t *testing.T) {
	r := connectRoles(t)
	acme, router, node, catalog := r.conns["acme"], r.conns["router"], r.conns["node-x"], r.conns["catalog"]
	echo := func(c *roleConn, subject, queue string) {
		_, err := c.nc.QueueSubscribe(subject, queue, func(m *nats.Msg) { _ = m.Respond(append([]byte("re:"), m.Data...)) })
		require.NoError(t, err)
		require.NoError(t, c.nc.Flush())
	}
	echo(router, "fed.infer.>", "fed-router")
	echo(node, "fed.node.node-x.infer.internal", "q")
	echo(node, "fed.node.node-x.replay", "q")
	echo(catalog, "fed.catalog.register.*.*.*", "fed-catalog")

	for _, tc := range []struct {
		from    *roleConn
		subject string
	}{
		{acme, "fed.infer.generate.acme"},          // client → router, final to _INBOX.acme
		{router, "fed.node.node-x.infer.internal"}, // router → node, ack to _INBOX.router
		{acme, "fed.node.node-x.replay"},           // client → node
		{node, "fed.catalog.register.node-x.eu.internal"},
	} {
		resp, err := tc.from.nc.Request(tc.subject, []byte("hi"), natsembed.WaitFor)
		if assert.NoError(t, err, "%s requests %s", tc.from.name, tc.subject) {
			assert.Equal(t, "re:hi", string(resp.Data))
		}
	}

	// A micro service under router creds answers the operator's $SRV ping
	// and its endpoint.
	svc, err := micro.AddService(router.nc, micro.Config{Name: "fed-router", Version: "0.0.1",
		Endpoint: &micro.EndpointConfig{Subject: "fed.router.candidates", Handler: micro.HandlerFunc(func(req micro.Request) {
			_ = req.Respond([]byte("candidates"))
		})}})
	require.NoError(t, err)
	defer func() { _ = svc.Stop() }()
	require.NoError(t, router.nc.Flush()) // its subscriptions are in place
	for subj, want := range map[string]string{"$SRV.PING.fed-router": `"name":"fed-router"`, "fed.router.candidates": "candidates"} {
		resp, err := r.m.op.nc.Request(subj, nil, natsembed.WaitFor)
		if assert.NoError(t, err, subj) {
			assert.Contains(t, string(resp.Data), want, subj)
		}
	}

	// A reply subject the client chose: the answer is denied, nothing lands.
	for _, tc := range []struct {
		responder        *roleConn
		subject, replyTo string
	}{
		{node, "fed.node.node-x.replay", "$JS.API.STREAM.CREATE.EVIL"},
		{router, "fed.infer.generate.acme", "$KV.fed_config.router.policy"},
		{node, "fed.node.node-x.replay", "$KV.fed_catalog.nodes.node-y"},
	} {
		got := tc.responder.violations(func() {
			require.NoError(t, acme.nc.PublishRequest(tc.subject, tc.replyTo, []byte("{}")))
			require.NoError(t, acme.nc.Flush())
			// The responder answers on its own goroutine: wait for its
			// violation before the sentinel.
			natsembed.Eventually(t, 0, func() error {
				return natsembed.Check(len(tc.responder.viol) > 0, "%s's answer to %s was not denied (allow_responses?)",
					tc.responder.name, tc.replyTo)
			})
		})
		assert.Equal(t, []violation{{"publish", tc.replyTo}}, got, "%s answering to %s", tc.responder.name, tc.replyTo)
	}
	js, err := jetstream.New(r.m.op.nc)
	require.NoError(t, err)
	_, err = js.Stream(context.Background(), "EVIL")
	assert.ErrorIs(t, err, jetstream.ErrStreamNotFound)
	for _, b := range []string{buckets.Config, buckets.Catalog} {
		kv, err := js.KeyValue(context.Background(), b)
		require.NoError(t, err)
		st, err := kv.Status(context.Background())
		require.NoError(t, err)
		assert.Zero(t, st.Values(), b)
	}
}

func TestAuthInitCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	out, stderr, code := runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "created auth dir")

	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	seeds, err := filepath.Glob(filepath.Join(dir, "*.nk"))
	require.NoError(t, err)
	keys, err := filepath.Glob(filepath.Join(dir, auth.DirKeys, "*.nk"))
	require.NoError(t, err)
	assert.Len(t, seeds, 3)
	assert.Len(t, keys, len(auth.Perms("")))
	for _, f := range append(seeds, keys...) {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	before, err := os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)

	// Again: says so, exits 0, changes nothing.
	out, stderr, code = runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "already a fedmesh auth dir")
	after, err := os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)
	assert.Equal(t, before, after)

	// Another prefix on the same dir, or a dir with something else in it.
	_, stderr, code = runCLI(t, noNATS, "", "--prefix", "other", "auth", "init", dir)
	assert.Equal(t, ExitError, code)
	assert.Contains(t, stderr, `prefix "fed"`)
	busy := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("mine"), 0o600))
	_, stderr, code = runCLI(t, noNATS, "", "auth", "init", busy)
	assert.Equal(t, ExitError, code)
	assert.Contains(t, stderr, "not empty")
	entries, err := os.ReadDir(busy)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "a refused init wrote files")

	// nats-server's own config parser takes server.conf: the operator, the
	// system account and both accounts preloaded.
	opts, err := server.ProcessConfigFile(filepath.Join(dir, auth.FileServerConf))
	require.NoError(t, err)
	require.Len(t, opts.TrustedOperators, 1)
	var m auth.Manifest
	data, err := os.ReadFile(filepath.Join(dir, auth.FileManifest))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &m))
	assert.Equal(t, m.Operator, opts.TrustedOperators[0].Subject)
	assert.Equal(t, m.SystemAccount, opts.SystemAccount)
	assert.Equal(t, m.SystemAccount, opts.TrustedOperators[0].SystemAccount)
	_, isMem := opts.AccountResolver.(*server.MemAccResolver)
	assert.True(t, isMem, "resolver is %T", opts.AccountResolver)

	// A server from it knows both accounts (preloaded), FEDMESH with JetStream.
	s := natsembed.StartOperatorForTest(t, dir)
	acc, err := s.LookupAccount(m.Account)
	require.NoError(t, err)
	assert.True(t, acc.JetStreamEnabled(), "JetStream in account %s", auth.AccountName)
	require.NotNil(t, s.SystemAccount())
	assert.Equal(t, m.SystemAccount, s.SystemAccount().Name)
	data, err = os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	assert.Equal(t, m.Operator, ac.Issuer)
	assert.Equal(t, auth.AccountName, ac.Name)
	assert.True(t, ac.Limits.JetStreamLimits.IsUnlimited(), "JetStream limits %+v", ac.Limits.JetStreamLimits)
	assert.Len(t, ac.SigningKeys, len(auth.Perms("")))
	for key, pub := range m.SigningKeys {
		sc, ok := ac.SigningKeys.GetScope(pub)
		require.True(t, ok, key)
		us, ok := sc.(*jwt.UserScope)
		require.True(t, ok, "%s is a scoped key", key)
		assert.Equal(t, key, us.Role)
	}
}

func TestAuthIssueCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	_, stderr, code := runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	var m auth.Manifest
	data, err := os.ReadFile(filepath.Join(dir, auth.FileManifest))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &m))

	decode := func(t *testing.T, creds []byte) *jwt.UserClaims {
		t.Helper()
		token, err := jwt.ParseDecoratedJWT(creds)
		require.NoError(t, err)
		uc, err := jwt.DecodeUserClaims(token)
		require.NoError(t, err)
		kp, err := jwt.ParseDecoratedUserNKey(creds)
		require.NoError(t, err)
		pub, err := kp.PublicKey()
		require.NoError(t, err)
		assert.Equal(t, uc.Subject, pub, "the seed is the JWT's user")
		assert.Equal(t, m.Account, uc.IssuerAccount)
		assert.True(t, uc.HasEmptyPermissions(), "a scoped user carries no permissions")
		return uc
	}
	ok := []struct {
		args       []string
		name, key  string
		tags       []string
		outputFile bool
	}{
		{[]string{"client", "--tenant", "acme"}, "client-acme", "client", []string{"role:client", "tenant:acme"}, false},
		{[]string{"client", "--tenant", "acme", "--name", "acme-batch"}, "acme-batch", "client", []string{"role:client", "tenant:acme"}, true},
		{[]string{"gateway"}, `gateway-[0-9a-f]{8}`, "gateway", []string{"role:gateway"}, false},
		{[]string{"router", "--name", "router-2"}, "router-2", "router", []string{"role:router"}, true},
		{[]string{"catalog"}, `catalog-[0-9a-f]{8}`, "catalog", []string{"role:catalog"}, false},
		{[]string{"health", "--name", "health-eu"}, "health-eu", "health", []string{"role:health"}, false},
		{[]string{"operator"}, "operator", "operator", []string{"role:operator"}, false},
		{[]string{"node", "--node-id", "GPU_1", "--region", "eu-west", "--clearance", "restricted"}, "GPU_1", "node-restricted",
			[]string{"role:node", "region:eu-west", "clearance:restricted"}, true},
		{[]string{"node", "--node-id", "n2", "--region", "us", "--clearance", "public"}, "n2", "node-public",
			[]string{"role:node", "region:us", "clearance:public"}, false},
	}
	for _, tc := range ok {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"auth", "issue", dir}, tc.args...)
			out := filepath.Join(t.TempDir(), "u.creds")
			if tc.outputFile {
				args = append(args, "--out", out)
			}
			stdout, stderr, code := runCLI(t, noNATS, "", args...)
			require.Equal(t, 0, code, stderr)
			creds := []byte(stdout)
			if tc.outputFile {
				assert.Empty(t, stdout)
				st, err := os.Stat(out)
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
				creds, err = os.ReadFile(out)
				require.NoError(t, err)
			}
			assert.Contains(t, string(creds), "-----BEGIN NATS USER JWT-----")
			assert.Contains(t, string(creds), "-----BEGIN USER NKEY SEED-----")
			uc := decode(t, creds)
			assert.Regexp(t, "^"+tc.name+"$", uc.Name)
			assert.Contains(t, stderr, "user "+uc.Name+" ", "the name is told")
			assert.ElementsMatch(t, tc.tags, []string(uc.Tags))
			assert.Equal(t, m.SigningKeys[tc.key], uc.Issuer, "issued by the %s key", tc.key)
		})
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"client"}, "tenant is empty"},
		{[]string{"client", "--tenant", "a.b"}, "only letters"},
		{[]string{"client", "--tenant", "Acme"}, "lowercase"},
		{[]string{"client", "--tenant", "router"}, "reserved"},
		{[]string{"client", "--tenant", "node"}, "reserved"},
		{[]string{"client", "--tenant", "acme", "--region", "eu"}, "for role node"},
		{[]string{"router", "--tenant", "acme"}, "for role client"},
		{[]string{"gateway", "--clearance", "public"}, "for role node"},
		{[]string{"node", "--node-id", "n1", "--region", "eu"}, "--clearance is required"},
		{[]string{"node", "--node-id", "n1", "--region", "eu", "--clearance", "secret"}, "unknown privacy level"},
		{[]string{"node", "--region", "eu", "--clearance", "public"}, "node_id is empty"},
		{[]string{"node", "--node-id", "n*", "--region", "eu", "--clearance", "public"}, "only letters"},
		{[]string{"node", "--node-id", "n1", "--clearance", "public"}, "region is empty"},
		{[]string{"node", "--node-id", "n1", "--region", "EU", "--clearance", "public"}, "lowercase"},
		{[]string{"node", "--node-id", "n1", "--region", "eu", "--clearance", "public", "--name", "x"}, "--node-id"},
		{[]string{"router", "--name", "a b"}, "only letters"},
		{[]string{"admin"}, "unknown role"},
	}
	for _, tc := range bad {
		t.Run("bad "+strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := runCLI(t, noNATS, "", append([]string{"auth", "issue", dir}, tc.args...)...)
			assert.Equal(t, ExitError, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.want)
		})
	}
	_, stderr, code = runCLI(t, noNATS, "", "auth", "issue", t.TempDir(), "gateway")
	assert.Equal(t, ExitError, code)
	assert.Contains(t, stderr, "not a fedmesh auth dir")
}

func TestAuthRolesCommand(t *testing.T) {
	out, stderr, code := runCLI(t, noNATS, "", "--prefix", "mesh", "auth", "roles")
	require.Equal(t, 0, code, stderr)
	for _, p := range auth.Perms("mesh") {
		assert.Contains(t, out, "| "+p.Role+" | `"+p.Key+"` |")
	}
	assert.Contains(t, out, "`mesh.node.{{name()}}.infer.internal`")
	assert.NotContains(t, out, "`fed.")
}

// An auth dir an older fedmesh made (here: the client template without its
// fed.infer.custom.<tenant> deny): `auth issue` warns and changes nothing,
// `auth init` brings it up to date keeping its keys and says which, and
// `dev --secure` would run the same update before starting its server.
func TestAuthInitUpgradesOldDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	_, stderr, code := runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	var m auth.Manifest
	data, err := os.ReadFile(filepath.Join(dir, auth.FileManifest))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &m))
	data, err = os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	sc, ok := ac.SigningKeys.GetScope(m.SigningKeys[auth.RoleClient])
	require.True(t, ok)
	us := sc.(*jwt.UserScope)
	require.NotEmpty(t, us.Template.Pub.Deny)
	us.Template.Pub.Deny = nil // as before the deny was added
	seed, err := os.ReadFile(filepath.Join(dir, auth.FileOperatorSeed))
	require.NoError(t, err)
	op, err := nkeys.FromSeed(seed)
	require.NoError(t, err)
	old, err := ac.Encode(op)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, auth.FileAccountJWT), []byte(old+"\n"), 0o644))

	_, stderr, code = runCLI(t, noNATS, "", "auth", "issue", dir, "client", "--tenant", "acme")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "older fedmesh")
	assert.Contains(t, stderr, "of client are not current")
	data, err = os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)
	assert.Equal(t, old, strings.TrimSpace(string(data)), "issue changed the account")

	out, stderr, code := runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "updated the role permissions of signing keys client")
	data, err = os.ReadFile(filepath.Join(dir, auth.FileAccountJWT))
	require.NoError(t, err)
	ac, err = jwt.DecodeAccountClaims(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	sc, ok = ac.SigningKeys.GetScope(m.SigningKeys[auth.RoleClient])
	require.True(t, ok, "the client key is kept")
	assert.Equal(t, jwt.StringList{"fed.infer.custom.{{tag(tenant)}}"}, sc.(*jwt.UserScope).Template.Pub.Deny)
	conf, err := os.ReadFile(filepath.Join(dir, auth.FileServerConf))
	require.NoError(t, err)
	assert.Contains(t, string(conf), strings.TrimSpace(string(data)), "server.conf preloads the new account JWT")

	out, stderr, code = runCLI(t, noNATS, "", "auth", "init", dir)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "nothing changed")
	_, stderr, code = runCLI(t, noNATS, "", "auth", "issue", dir, "client", "--tenant", "acme")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "older fedmesh")
}
