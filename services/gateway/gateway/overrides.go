package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

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
//
// requestID is the request's id (caller.requestID): the caller's
// X-Fed-Request-Id when valid; an invalid one is a 400.
func routing(r *http.Request, t Tenant, requestID, model, capability string, maxTimeout time.Duration) (client.Request, time.Duration, error) {
	asked := nats.Header{}
	for _, name := range overridable {
		if v := r.Header.Get("X-" + name); v != "" {
			asked.Set(name, v)
		}
	}
	// Model also names the request in logs and metrics.
	req := client.Request{Capability: capability, RequestID: requestID, Model: model}
	spec, err := wire.ParseSpec(asked)
	if err != nil {
		return req, 0, callerHeaderError(err)
	}
	if spec.RequestID != "" && spec.RequestID != requestID {
		// It becomes a subject token (fed.cancel.<id>): no dots or wildcards.
		err := wire.ValidateID("request id", spec.RequestID)
		return req, 0, invalid(wire.CodeBadRequest, "header X-Fed-Request-Id: %s", clip(fmt.Sprint(err), maxShownLen))
	}
	spec.RequestID = requestID
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
// not its mesh twin: about the caller's own header, so it is shown.
func callerHeaderError(err error) error {
	var pe *wire.Error
	if !errors.As(err, &pe) {
		return invalid(wire.CodeBadRequest, "%s", clip(err.Error(), maxShownLen))
	}
	return invalid(pe.Code, "%s", clip(strings.Replace(pe.Description, "header Fed-", "header X-Fed-", 1), maxShownLen))
}

// withinTenant applies t's privacy floor and region allow-list to spec:
// what the caller left out (not in asked) is the tenant's, what it asked for
// must lie within the tenant's.
func withinTenant(spec *wire.Spec, asked nats.Header, t Tenant) error {
	floor, _ := wire.ParsePrivacy(t.Privacy) // validated with the config
	if asked.Get(wire.HdrPrivacy) == "" {
		spec.Privacy = floor
	} else if spec.Privacy < floor {
		return invalid(wire.CodePrivacy, "X-Fed-Privacy %s is weaker than tenant %s's level %s", spec.Privacy, t.ID, floor)
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
			return invalid(wire.CodePrivacy, "X-Fed-Regions: region %s is not allowed for tenant %s (allowed: %s)",
				reg, t.ID, strings.Join(t.Regions, ","))
		}
	}
	return nil
}
