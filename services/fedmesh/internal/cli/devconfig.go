package cli

import (
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/services/router/router"
)

// devRouterRegion sets the dev router's own region, which locality scoring
// uses for requests that carry no Fed-Region.
func devRouterRegion(region string) func(*router.Config) {
	return func(c *router.Config) { c.Region = region }
}

// devKeys is the gateway key table of `fedmesh dev`: one well-known key for
// tenant "dev", internal privacy, any region, no rate limit. It is a demo
// credential; real deployments load keys from a file (gateway --keys).
func devKeys() map[string]gateway.Tenant {
	return map[string]gateway.Tenant{DevAPIKey: {ID: devTenant, Privacy: "internal"}}
}

// devTenant is the dev mesh's tenant: the gateway key's, and the secured
// dev client's (DIR/dev-client.creds).
const devTenant = "dev"
