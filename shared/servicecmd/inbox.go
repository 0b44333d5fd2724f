package servicecmd

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
)

// serviceNodeAgent is the node agent's command name; its auth role is "node".
const serviceNodeAgent = "nodeagent"

// InstanceName names one instance's inbox, and in secured mode its
// credential (`fedmesh auth issue ... --name`): a node agent's is its node
// id, another service's <service>-<id> (router-2).
func InstanceName(service, id string) string {
	if service == serviceNodeAgent {
		return id
	}
	return service + "-" + id
}

// InboxPrefix is the inbox prefix of one instance of a service: its own,
// so that in secured mode no instance reads another's replies, not even
// one of the same service (a node's is _INBOX.node.<id>, another
// service's _INBOX.<service>.<name>; DESIGN §16). name is the instance's
// credential name, or InstanceName without one.
func InboxPrefix(service, name string) string {
	if service == serviceNodeAgent {
		return "_INBOX.node." + name
	}
	return "_INBOX." + service + "." + name
}

// roleOf is the auth role whose credential a service runs on.
func roleOf(service string) string {
	if service == serviceNodeAgent {
		return "node"
	}
	return service
}

// fedmeshRoles are the values of the role: tag `fedmesh auth issue` writes.
var fedmeshRoles = []string{"client", "gateway", "router", "catalog", "health", "node", "operator"}

// credsIdentity reads the name and role: tag of the user JWT in a .creds
// file. It is read, not verified: the server does that when connecting.
func credsIdentity(path string) (name, role string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("--creds: %w", err)
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return "", "", fmt.Errorf("--creds %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", "", fmt.Errorf("--creds %s: %w", path, err)
	}
	for _, t := range uc.Tags {
		if v, ok := strings.CutPrefix(t, "role:"); ok {
			role = v
		}
	}
	return uc.Name, role, nil
}

// InboxPrefixFor is the inbox prefix instance id of service connects
// with. With a credential `fedmesh auth issue` made it is the one that
// credential may read, named by the credential (its role's template allows
// _INBOX.<role>.{{name()}}.>); a credential of another service's role is
// refused before connecting. Otherwise the instance's own, by InstanceName.
func (c *Common) InboxPrefixFor(service, id string) (string, error) {
	if c.Creds == "" {
		return InboxPrefix(service, InstanceName(service, id)), nil
	}
	name, role, err := credsIdentity(c.Creds)
	if err != nil {
		return "", err
	}
	switch {
	case !slices.Contains(fedmeshRoles, role) || name == "":
		// not fedmesh's: whatever it allows, the instance's own prefix
		return InboxPrefix(service, InstanceName(service, id)), nil
	case role != roleOf(service) && role != "operator":
		return "", fmt.Errorf("--creds %s is a %s credential (%s), not a %s one", c.Creds, role, name, roleOf(service))
	}
	return InboxPrefix(service, name), nil
}
