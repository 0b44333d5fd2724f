package router

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// The exported decoders below are the router's own reading of fed_config
// (DESIGN §5.3), for tools that must refuse exactly what routers refuse
// (`fedmesh policy validate|set`). They wrap the decoders applyConfig uses
// and change nothing about them.

// DecodePolicy reads a router.policy value the way a router whose
// Config.Policy is base applies it: base gets the same defaults New gives it
// (a zero base is record.DefaultPolicy()), fields absent from data keep
// base's value, and the error names the first bad field.
func DecodePolicy(base record.Policy, data []byte) (record.Policy, error) {
	return decodePolicy(basePolicy(base), data)
}

// DecodeRegions reads a regions value as routers do; the error names the
// bad region and field.
func DecodeRegions(data []byte) (record.Regions, error) {
	r, err := decodeRegions(data)
	if err != nil {
		return nil, nameRegionField(data, err)
	}
	return r, nil
}

// nameRegionField adds the region to a bad privacy name's error:
// encoding/json reports an UnmarshalText error without the path it was
// under. It only rewords err; what is refused stays decodeRegions' call.
func nameRegionField(data []byte, err error) error {
	var raw map[string]struct {
		Privacy *string `json:"privacy"`
	}
	if json.Unmarshal(data, &raw) != nil {
		return err // the JSON error names the field itself
	}
	ids := make([]string, 0, len(raw))
	for id := range raw {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if p := raw[id].Privacy; p != nil {
			if _, perr := wire.ParsePrivacy(*p); perr != nil {
				return fmt.Errorf("regions.%s.privacy: %w", id, perr)
			}
		}
	}
	return err
}

// DecodeTenants reads a tenants value as routers do; the error names the
// bad tenant and field.
func DecodeTenants(data []byte) (record.Tenants, error) { return decodeTenants(data) }
