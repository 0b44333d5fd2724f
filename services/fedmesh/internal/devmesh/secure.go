package devmesh

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// Secured mode (DESIGN §13): every part of the mesh on a user of its own
// role, issued from an auth dir (`fedmesh auth init`).

// roleOf is the auth role of a part, by its service name.
func roleOf(service string) string {
	if service == svcNodeAgent {
		return auth.RoleNode
	}
	return service // catalog, health, router, gateway: the role of the same name
}

// Credentials gives each part a user of its role from d, named as its
// inbox is (servicecmd.InstanceName: router-1, router-2, so no router reads
// another's inbox); a node agent's is named by its node id and carries its
// region and clearance, so the server enforces what the node may subscribe
// to and register as.
func Credentials(d *auth.Dir) func(service, id string, node *nodeagent.Config) ([]nats.Option, error) {
	return func(service, id string, node *nodeagent.Config) ([]nats.Option, error) {
		u := auth.User{Role: roleOf(service)}
		if node != nil {
			u.NodeID, u.Region, u.Clearance = node.NodeID, node.Region, node.Clearance
		} else {
			u.Name = servicecmd.InstanceName(service, id)
		}
		o, err := d.ConnOption(u)
		if err != nil {
			return nil, err
		}
		return []nats.Option{o}, nil
	}
}

// SetupSecured prepares a secured mesh on s: the operator creates the
// buckets (no service may), and dir gets dev-client.creds (a client of
// tenant) and operator.creds for the nats CLI.
func SetupSecured(ctx context.Context, s *server.Server, d *auth.Dir, dir, tenant string, opts buckets.Options) error {
	op, err := d.ConnOption(auth.User{Role: auth.RoleOperator})
	if err != nil {
		return err
	}
	nc, err := natsembed.ConnectInProcess(s, "fedmesh-dev-setup", op, nats.CustomInboxPrefix("_INBOX.operator"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := buckets.EnsureConn(ctx, nc, opts); err != nil {
		return fmt.Errorf("devmesh: create the buckets as operator: %w", err)
	}
	for name, u := range map[string]auth.User{
		"dev-client.creds": {Role: auth.RoleClient, Tenant: tenant},
		"operator.creds":   {Role: auth.RoleOperator},
	} {
		creds, err := d.Issue(u)
		if err != nil {
			return err
		}
		if err := auth.WriteFile(filepath.Join(dir, name), creds); err != nil {
			return err
		}
	}
	return nil
}
