// Package auth makes fedmesh's NATS decentralized-auth material: an
// operator, the FEDMESH account (JetStream on, unlimited) with one scoped
// signing key per permission set, the system account, the nats-server
// config that trusts them, and user credentials for each role.
//
// Every permission lives in the account JWT, as the template of a scoped
// signing key; a user JWT carries only its name and tags. So a role's
// permissions are what the table below says whoever issued the user, and a
// key that leaks can only mint users of its own role.
package auth

import (
	"fmt"
	"strings"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Roles, as `fedmesh auth issue DIR <role>` names them.
const (
	RoleClient   = "client"
	RoleGateway  = "gateway"
	RoleRouter   = "router"
	RoleCatalog  = "catalog"
	RoleHealth   = "health"
	RoleNode     = "node"
	RoleOperator = "operator"
)

// RoleNames lists every role in the order the table shows them.
var RoleNames = []string{RoleClient, RoleGateway, RoleRouter, RoleCatalog, RoleHealth, RoleNode, RoleOperator}

// Tags a user JWT carries. NATS lowercases tags, so values read by a
// template (tenant, region) must be lowercase to expand to the same token.
const (
	TagRole      = "role"
	TagTenant    = "tenant"
	TagRegion    = "region"
	TagClearance = "clearance"
)

// Template placeholders the server expands when a user connects.
const (
	tmplName   = "{{name()}}"
	tmplTenant = "{{tag(" + TagTenant + ")}}"
	tmplRegion = "{{tag(" + TagRegion + ")}}"
)

// InboxRoot starts every inbox in the mesh. Each role subscribes only below
// its own prefix (InboxPrefix); replies are published on InboxRoot + ">".
const InboxRoot = "_INBOX"

// Perm is the permission set of one scoped signing key: default deny, these
// subjects allowed.
//
// No role gets allow_responses: it lets a connection publish once to the
// reply subject of any message it received, whatever its deny list says,
// and the requester picks that subject. A client asking a node for a replay
// with reply "$KV.fed_catalog.nodes.<other>" would have the node write the
// catalog. Every requester in the mesh uses an inbox under _INBOX, so
// responders publish on _INBOX.> instead, and JetStream watchers answer
// flow control on $JS.FC.<stream>.> (see kvRead).
type Perm struct {
	// Key is the signing key's name: the role, or node-<clearance>.
	Key  string
	Role string
	// Clearance of node keys.
	Clearance wire.Privacy
	Pub, Sub  []string
	// PubDeny overrides Pub (clients: fed.infer.custom.<tenant>, which the
	// router reads as capability custom.<tenant> without a tenant; nodes:
	// the inboxes of nodes and catalog, which never ask a node anything).
	PubDeny []string
	// SubDeny overrides Sub (clients: the services' inbox prefixes).
	SubDeny []string
}

// InboxPrefix is what a role's connection passes to nats.CustomInboxPrefix:
// _INBOX.<tenant> for a client (name is the tenant), _INBOX.node.<id> for
// a node, _INBOX.<role>.<name> for a service (name is the user's name, so
// every instance has its own), _INBOX for the operator.
func InboxPrefix(role, name string) string {
	switch role {
	case RoleClient:
		return InboxRoot + "." + name
	case RoleNode:
		return InboxRoot + ".node." + name
	case RoleOperator:
		return InboxRoot
	}
	return InboxRoot + "." + role + "." + name
}

// serviceInboxes are the second tokens of the services' and nodes' inbox
// prefixes; no tenant may be named like one (its inbox would be theirs).
var serviceInboxes = []string{RoleGateway, RoleRouter, RoleCatalog, RoleHealth, RoleNode}

// JetStream API subjects of one KV bucket. These are exactly what
// buckets.EnsureConn/Open, KeyValue.Get and a KeyValue.Watch(All) of
// nats.go's jetstream package need (found by running them under these
// permissions, see the tests); nothing lets a role create, update or
// delete a stream.
func kvOpen(bucket string) []string {
	return []string{"$JS.API.STREAM.INFO.KV_" + bucket}
}

func kvRead(bucket string) []string {
	s := "KV_" + bucket
	return append(kvOpen(bucket),
		"$JS.API.CONSUMER.CREATE."+s+".>", // the watch's ordered consumer (name.filter)
		"$JS.API.CONSUMER.DELETE."+s+".*", // stopping (or resetting) the watch
		"$JS.API.DIRECT.GET."+s+".>",      // Get, and Create's look-up of a deleted key
		"$JS.FC."+s+".>",                  // flow-control replies of the ordered consumer
	)
}

func kvWrite(bucket string) []string {
	return []string{"$KV." + bucket + ".>"} // Put, Create, Update, Delete, Purge; the ack comes to the inbox
}

// kvWatchKey is read access to one key (a node's own catalog record): the
// consumer filter is part of the create subject and the server checks it
// against the consumer config, so no other key can be watched.
func kvWatchKey(bucket, key string) []string {
	s := "KV_" + bucket
	return append(kvOpen(bucket),
		"$JS.API.CONSUMER.CREATE."+s+".*.$KV."+bucket+"."+key,
		"$JS.API.CONSUMER.DELETE."+s+".*",
		"$JS.FC."+s+".>",
	)
}

// objOpen is opening fed_blobs (buckets.EnsureConn/Open): catalog,
// health and routers open it with the other buckets and never read it.
func objOpen(bucket string) []string {
	return []string{"$JS.API.STREAM.INFO.OBJ_" + bucket}
}

// objUse is reading and writing blobs of fed_blobs (shared/blobs): the
// requesters (their request bodies, their answers) and nodes (the bodies
// they serve, their answers). Listing is not allowed: the meta records
// are reached only by a direct get naming one subject (a name), chunks
// only by a consumer whose filter names one object's chunk subject (known
// from its meta). Neither confines a reader to its own request (a subject
// token may be a wildcard): blobs are sealed with a per-request key that
// travels only in the request's headers (shared/blobs/seal.go).
func objUse(bucket string) []string {
	s := "OBJ_" + bucket
	return append(objOpen(bucket),
		"$O."+bucket+".C.*",                                 // Put: chunks
		"$O."+bucket+".M.*",                                 // Put: the meta record
		"$JS.API.DIRECT.GET."+s+".$O."+bucket+".M.*",        // GetInfo of one name
		"$JS.API.CONSUMER.CREATE."+s+".*.$O."+bucket+".C.*", // Get: the ordered consumer on one object's chunks
		"$JS.API.CONSUMER.DELETE."+s+".*",
		"$JS.FC."+s+".>",
		"$JS.API.STREAM.PURGE."+s, // Delete, and a failed Put's cleanup
	)
}

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// NodeKey names the signing key of nodes cleared to level c.
func NodeKey(c wire.Privacy) string { return RoleNode + "-" + c.String() }

// Levels is every privacy level, lowest first.
var Levels = []wire.Privacy{wire.PrivacyPublic, wire.PrivacyInternal, wire.PrivacyConfidential, wire.PrivacyRestricted}

// Perms is the role table for subject prefix prefix ("" = "fed"): one
// entry per scoped signing key, node keys one per clearance level.
func Perms(prefix string) []Perm {
	if prefix == "" {
		prefix = "fed"
	}
	p := func(s ...string) string { return prefix + "." + strings.Join(s, ".") }
	replies := InboxRoot + ".>"
	// a service instance reads only its own inbox, named by its user
	inbox := func(role string) string { return InboxPrefix(role, tmplName) + ".>" }
	// A client's inbox is _INBOX.<tenant>: never one of the services'.
	svcInboxes := make([]string, 0, len(serviceInboxes))
	for _, r := range serviceInboxes {
		svcInboxes = append(svcInboxes, InboxRoot+"."+r+".>")
	}
	perms := []Perm{
		{Key: RoleClient, Role: RoleClient,
			Pub: cat([]string{p("infer", "*", tmplTenant), p("infer", "custom", "*", tmplTenant), p("cancel", "*"),
				p("held", "*"), p("client", "duplicate", "*"), p("node", "*", "replay")}, objUse(buckets.Blobs)),
			// fed.infer.*.T matches fed.infer.custom.T too, which names no
			// tenant (capability custom.T): the Fed-Tenant header would decide
			PubDeny: []string{p("infer", "custom", tmplTenant)},
			Sub:     []string{InboxRoot + "." + tmplTenant + ".>"},
			SubDeny: svcInboxes},
		{Key: RoleGateway, Role: RoleGateway,
			Pub: cat([]string{p("infer", ">"), p("cancel", "*"), p("held", "*"), p("client", "duplicate", "*"), p("node", "*", "replay"),
				p("catalog", "list"), p("catalog", "get"), p("catalog", "find")}, objUse(buckets.Blobs)),
			Sub: []string{inbox(RoleGateway)}},
		{Key: RoleRouter, Role: RoleRouter,
			// fed.node.*.status: a dispatch's ack never came, does the node hold it?
			Pub: cat([]string{p("node", "*", "infer", "*"), p("node", "*", "status"), p("cancel", "*"), p("router", "unplaced"), p("router", "decisions"),
				p("router", "failed", "*"), replies},
				kvRead(buckets.Catalog), kvRead(buckets.Health), kvRead(buckets.Config), objOpen(buckets.Blobs)),
			Sub: []string{p("infer", ">"), p("outcome", "*"), p("router", "candidates"), p("held", "*"), "$SRV.>", inbox(RoleRouter)}},
		{Key: RoleCatalog, Role: RoleCatalog,
			Pub: cat([]string{replies}, kvRead(buckets.Catalog), kvWrite(buckets.Catalog),
				kvOpen(buckets.Health), kvOpen(buckets.Config), objOpen(buckets.Blobs)),
			// the open register forms too: only the operator may publish there
			Sub: []string{p("catalog", "register", "*", "*", "*"), p("catalog", "deregister", "*"),
				p("catalog", "register"), p("catalog", "deregister"), p("catalog", "find"),
				p("catalog", "list"), p("catalog", "get"), p("heartbeat", "*"), "$SRV.>", inbox(RoleCatalog)}},
		{Key: RoleHealth, Role: RoleHealth,
			Pub: cat([]string{p("node", "*", "probe"), p("health", "stats"), replies}, kvRead(buckets.Catalog), kvRead(buckets.Health),
				kvWrite(buckets.Health), kvOpen(buckets.Config), objOpen(buckets.Blobs)),
			Sub: []string{p("heartbeat", "*"), p("outcome", "*"), p("router", "failed", "*"), p("router", "unplaced"),
				p("client", "duplicate", "*"), p("health", "get"), p("health", "list"), p("stats"), "$SRV.>", inbox(RoleHealth)}},
	}
	for _, c := range Levels {
		sub := make([]string, 0, 8)
		for _, l := range Levels[:c+1] {
			sub = append(sub, p("node", tmplName, "infer", l.String()))
		}
		sub = append(sub, p("node", tmplName, "probe"), p("node", tmplName, "replay"), p("node", tmplName, "status"), p("cancel", "*"), p("held", "*"), "$SRV.>",
			InboxPrefix(RoleNode, tmplName)+".>")
		perms = append(perms, Perm{Key: NodeKey(c), Role: RoleNode, Clearance: c,
			Pub: cat([]string{p("heartbeat", tmplName), p("outcome", tmplName),
				p("catalog", "register", tmplName, tmplRegion, c.String()), p("catalog", "deregister", tmplName), replies},
				kvWatchKey(buckets.Catalog, buckets.NodeKey(tmplName)), objUse(buckets.Blobs)),
			// a node answers clients, the gateway, routers, health and the
			// operator; no node or catalog ever asks one, so it may not
			// publish in their inboxes (a forged register reply to another node)
			PubDeny: []string{InboxRoot + "." + RoleNode + ".>", InboxRoot + "." + RoleCatalog + ".>"},
			Sub:     sub})
	}
	return append(perms, Perm{Key: RoleOperator, Role: RoleOperator, Pub: []string{">"}, Sub: []string{">"}})
}

// Table renders perms as Markdown (README/DESIGN, `fedmesh auth roles`).
func Table(perms []Perm) string {
	var b strings.Builder
	b.WriteString("| role | signing key | publish | subscribe |\n|---|---|---|---|\n")
	code := func(l []string) string {
		if len(l) == 0 {
			return "—"
		}
		q := make([]string, len(l))
		for i, s := range l {
			q[i] = "`" + s + "`"
		}
		return strings.Join(q, ", ")
	}
	for _, p := range perms {
		sub := code(p.Sub)
		if len(p.SubDeny) > 0 {
			sub += "; denied: " + code(p.SubDeny)
		}
		pub := code(p.Pub)
		if len(p.PubDeny) > 0 {
			pub += "; denied: " + code(p.PubDeny)
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", p.Role, p.Key, pub, sub)
	}
	return b.String()
}
