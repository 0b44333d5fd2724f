package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// HTTP headers of the gateway. X-Fed-<Name> overrides the routing header
// Fed-<Name> of the mesh request, within what the tenant allows.
const (
	hdrRequestID = "X-Fed-Request-Id"
	hdrNode      = "X-Fed-Node"
	hdrTokens    = "X-Fed-Tokens"
)

// overridable lists the routing headers a caller may set as X-<name>.
// Fed-Tenant is not one: the tenant comes from the API key only.
var overridable = []string{
	wire.HdrRequestID, wire.HdrPrivacy, wire.HdrRegions, wire.HdrMaxLatencyMs, wire.HdrMinThroughput,
	wire.HdrPreferGPU, wire.HdrCostTolerance, wire.HdrRegion, wire.HdrSession, wire.HdrTimeoutMs,
}

// routing builds the mesh request for an HTTP request of tenant t: tenant
// defaults, then the caller's X-Fed-* overrides, as one wire.Spec whose
// headers the request carries. Bad values are 400; a weaker privacy than the
// tenant's default or a region outside its allow-list is 403 (refused, not
// clamped: the caller asked for something it may not have, and silently
// changing a data-residency choice would hide that). A longer timeout than
// the gateway's is shortened to it.
func routing(r *http.Request, t Tenant, model, capability string, maxTimeout time.Duration) (client.Request, time.Duration, error) {
	asked := nats.Header{}
	for _, name := range overridable {
		if v := r.Header.Get("X-" + name); v != "" {
			asked.Set(name, v)
		}
	}
	spec, err := wire.ParseSpec(asked)
	if err != nil {
		return client.Request{}, 0, callerHeaderError(err)
	}
	if spec.RequestID == "" {
		spec.RequestID = nuid.Next()
	} else if err := wire.ValidateID("request id", spec.RequestID); err != nil {
		// It becomes a subject token (fed.cancel.<id>): no dots or wildcards.
		return client.Request{}, 0, wire.Errorf(wire.CodeBadRequest, "header X-Fed-Request-Id: %v", err)
	}
	// Model also names the request in logs and metrics.
	req := client.Request{Capability: capability, RequestID: spec.RequestID, Model: model}
	if err := withinTenant(&spec, asked, t); err != nil {
		return req, 0, err
	}
	timeout := maxTimeout
	if spec.Timeout > 0 && spec.Timeout < timeout {
		timeout = spec.Timeout
	}
	spec.Tenant, spec.Model = t.ID, model
	spec.Timeout = 0 // the request's deadline carries it; the SDK sends what is left of it
	req.Header = nats.Header{}
	spec.Encode(req.Header)
	// Encode leaves the default level out; the gateway always states the
	// tenant's, so the router and node logs show what was decided here.
	req.Header.Set(wire.HdrPrivacy, spec.Privacy.String())
	return req, timeout, nil
}

// callerHeaderError is ParseSpec's error naming the header the caller sent,
// not its mesh twin.
func callerHeaderError(err error) *wire.Error {
	var pe *wire.Error
	if !errors.As(err, &pe) {
		return &wire.Error{Code: wire.CodeBadRequest, Description: err.Error()}
	}
	return &wire.Error{Code: pe.Code, Description: strings.Replace(pe.Description, "header Fed-", "header X-Fed-", 1)}
}

// withinTenant applies t's privacy floor and region allow-list to spec:
// what the caller left out (not in asked) is the tenant's, what it asked for
// must lie within the tenant's.
func withinTenant(spec *wire.Spec, asked nats.Header, t Tenant) error {
	floor, _ := wire.ParsePrivacy(t.Privacy) // validated with the config
	if asked.Get(wire.HdrPrivacy) == "" {
		spec.Privacy = floor
	} else if spec.Privacy < floor {
		return &wire.Error{Code: wire.CodePrivacy, RequestID: spec.RequestID,
			Description: "X-Fed-Privacy " + spec.Privacy.String() + " is weaker than tenant " + t.ID + "'s level " + floor.String()}
	}
	if spec.Regions == nil {
		spec.Regions = t.Regions
		return nil
	}
	if len(t.Regions) == 0 {
		return nil
	}
	for _, reg := range spec.Regions {
		if !slices.Contains(t.Regions, reg) {
			return &wire.Error{Code: wire.CodePrivacy, RequestID: spec.RequestID,
				Description: "X-Fed-Regions: region " + reg + " is not allowed for tenant " + t.ID + " (allowed: " + strings.Join(t.Regions, ",") + ")"}
		}
	}
	return nil
}
