package auth

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
)

// Identity is who a .creds file's user JWT says its holder is, from the
// name and tags `fedmesh auth issue` wrote: the role, a client's tenant, a
// node's id. It is read, not verified (the server does that on connect),
// and serves only to pick the inbox prefix and the tenant subject the
// role's permissions allow.
type Identity struct {
	Role   string
	Tenant string // role client
	Name   string // the user's name: a node's id, a service instance's name
}

// ReadIdentity reads the identity of the .creds file at path. A JWT without
// a role tag (not issued by fedmesh) gives an empty Role.
func ReadIdentity(path string) (Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Identity{}, fmt.Errorf("credentials: %w", err)
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		return Identity{}, fmt.Errorf("credentials %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return Identity{}, fmt.Errorf("credentials %s: %w", path, err)
	}
	id := Identity{Name: uc.Name}
	for _, t := range uc.Tags {
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		switch k {
		case TagRole:
			id.Role = v
		case TagTenant:
			id.Tenant = v
		}
	}
	return id, nil
}

// Inbox is the inbox prefix the identity's role may subscribe under
// (InboxPrefix); "" when the role is not one of fedmesh's.
func (id Identity) Inbox() string {
	switch id.Role {
	case RoleClient:
		return InboxPrefix(RoleClient, id.Tenant)
	case RoleNode:
		return InboxPrefix(RoleNode, id.Name)
	case RoleGateway, RoleRouter, RoleCatalog, RoleHealth:
		return InboxPrefix(id.Role, id.Name)
	case RoleOperator:
		return InboxPrefix(RoleOperator, "")
	}
	return ""
}
