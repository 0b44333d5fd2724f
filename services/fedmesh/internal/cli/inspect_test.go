package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func TestNodesShowsDashWithoutData(t *testing.T) {
	node := func(id string) record.Node {
		return record.Node{NodeID: id, Region: "eu", Clearance: wire.PrivacyInternal,
			Models: []record.Model{{ModelID: "m", Capabilities: []string{wire.CapGenerate}}}}
	}
	cases := []struct {
		name     string
		health   *record.Health // nil: no health record
		p50, p99 string
	}{
		{name: "no health record", p50: "-", p99: "-"},
		{name: "record without samples", health: &record.Health{State: record.StateUnknown, Circuit: record.CircuitClosed},
			p50: "-", p99: "-"},
		{name: "samples", health: &record.Health{State: record.StateHealthy, Circuit: record.CircuitClosed,
			LatencyP50Ms: 821.2, LatencyP99Ms: 1500.04, Samples: 3}, p50: "821.2", p99: "1500.0"},
		{name: "sub-millisecond", health: &record.Health{State: record.StateHealthy, Circuit: record.CircuitClosed,
			LatencyP50Ms: 0.3, LatencyP99Ms: 0.5, Samples: 3}, p50: "0.3", p99: "0.5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hl api.HealthListResponse
			if tc.health != nil {
				h := *tc.health
				h.NodeID = "n1"
				hl.Nodes = append(hl.Nodes, h)
			}
			var out bytes.Buffer
			require.NoError(t, printNodes(&out, api.ListResponse{Nodes: []record.Node{node("n1")}}, hl))
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			require.Len(t, lines, 2, out.String())
			head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
			// "P50 MS" and "P99 MS" are two words each in the header
			col := map[string]string{}
			names := []string{"NODE", "REGION", "GPU", "CLEARANCE", "MODELS", "STATE", "CIRCUIT", "P50", "P99", "IN FLIGHT"}
			require.Len(t, row, len(names), "row %q under %q", row, head)
			for i, n := range names {
				col[n] = row[i]
			}
			assert.Equal(t, tc.p50, col["P50"])
			assert.Equal(t, tc.p99, col["P99"])
			assert.NotContains(t, row, "0.0", "no zero stands for missing data")
		})
	}
}
