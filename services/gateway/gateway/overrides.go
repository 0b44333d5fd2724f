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
// defaults, then the caller's X-Fed-* overrides. Bad values are 400; a
// weaker privacy than the tenant's default or a region outside its
// allow-list is 403 (refused, not clamped: the caller asked for something
// it may not have, and silently changing a data-residency choice would hide that).
// A longer timeout than the gateway's is shortened to it.
func routing(r *http.Request, t Tenant, model, capability string, maxTimeout time.Duration) (client.Request, time.Duration, error) {
	h := nats.Header{}
	for _, name := range overridable {
		if v := r.Header.Get("X-" + name); v != "" {
			h.Set(name, v)
		}
	}
	spec, err := wire.ParseSpec(h)
	if err != nil {
		// Name the header the caller sent, not its mesh twin.
		we := &wire.Error{Code: wire.CodeBadRequest, Description: err.Error()}
		var pe *wire.Error
		if errors.As(err, &pe) {
			we.Code = pe.Code
			we.Description = strings.Replace(pe.Description, "header Fed-", "header X-Fed-", 1)
		}
		return client.Request{}, 0, we
	}
	req := client.Request{
		Capability:    capability,
		RequestID:     spec.RequestID,
		Tenant:        t.ID,
		Model:         model,
		MaxLatencyMs:  spec.MaxLatencyMs,
		MinThroughput: spec.MinThroughput,
		Region:        spec.Region,
		Session:       spec.Session,
	}
	if req.RequestID == "" {
		req.RequestID = nuid.Next()
	} else if err := wire.ValidateID("request id", req.RequestID); err != nil {
		// It becomes a subject token (fed.cancel.<id>): no dots or wildcards.
		return client.Request{}, 0, wire.Errorf(wire.CodeBadRequest, "header X-Fed-Request-Id: %v", err)
	}
	floor, _ := wire.ParsePrivacy(t.Privacy) // validated with the config
	req.Privacy = floor.String()
	if h.Get(wire.HdrPrivacy) != "" {
		if spec.Privacy < floor {
			return req, 0, &wire.Error{Code: wire.CodePrivacy, RequestID: req.RequestID,
				Description: "X-Fed-Privacy " + spec.Privacy.String() + " is weaker than tenant " + t.ID + "'s level " + floor.String()}
		}
		req.Privacy = spec.Privacy.String()
	}
	req.Regions = t.Regions
	if spec.Regions != nil {
		if len(t.Regions) > 0 {
			for _, reg := range spec.Regions {
				if !slices.Contains(t.Regions, reg) {
					return req, 0, &wire.Error{Code: wire.CodePrivacy, RequestID: req.RequestID,
						Description: "X-Fed-Regions: region " + reg + " is not allowed for tenant " + t.ID + " (allowed: " + strings.Join(t.Regions, ",") + ")"}
				}
			}
		}
		req.Regions = spec.Regions
	}
	if h.Get(wire.HdrPreferGPU) != "" {
		req.PreferGPU = &spec.PreferGPU
	}
	if h.Get(wire.HdrCostTolerance) != "" {
		req.CostTolerance = &spec.CostTolerance
	}
	timeout := maxTimeout
	if spec.Timeout > 0 && spec.Timeout < timeout {
		timeout = spec.Timeout
	}
	return req, timeout, nil
}
