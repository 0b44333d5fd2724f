package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// sample has one node in each state; every numeric column has distinct
// values so each sort key gives its own order.
func sample() Snapshot {
	return Snapshot{
		Time:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		NATSURL: "nats://127.0.0.1:4222",
		Mesh:    record.MeshDegraded,
		Totals: record.Counters{TotalRequests: 1234, SuccessfulRequests: 1200, FailedRequests: 34,
			TotalTokens: 98765, Retries: 7, DispatchFailures: 3, LatencyP50Ms: 41, LatencyP99Ms: 512, TTFTP50Ms: 23},
		Unplaced:  map[string]int64{"503": 2, "404": 1},
		ReqPerSec: 12.5, RateKnown: true,
		Nodes: []Node{
			{ID: "a-healthy", Region: "us-west", GPU: true, Clearance: "internal", Models: []string{"llama-3-8b"}, Registered: true,
				State: record.StateHealthy, Circuit: record.CircuitClosed, P50Ms: 45, P99Ms: 230, InFlight: 3, MaxInFlight: 16,
				ThroughputTPS: 50, Requests: 400, Failures: 2},
			{ID: "b-degraded", Region: "eu-west", GPU: true, Clearance: "confidential", Models: []string{"bge-small"}, Registered: true,
				State: record.StateDegraded, Circuit: record.CircuitHalfOpen, P50Ms: 1500, P99Ms: 2600, InFlight: 9, MaxInFlight: 16,
				ThroughputTPS: 10, Requests: 300, Failures: 5},
			{ID: "c-unhealthy", Region: "ap-south", Clearance: "internal", Models: []string{"qwen-coder-7b"}, Registered: true,
				State: record.StateUnhealthy, Circuit: record.CircuitOpen, P50Ms: 800, P99Ms: 9100, InFlight: 0, MaxInFlight: 8,
				ThroughputTPS: 0.5, Requests: 200, Failures: 30},
			{ID: "d-unknown", Region: "af-south", Registered: true,
				State: record.StateUnknown, Circuit: record.CircuitClosed, P50Ms: 0, P99Ms: 0, InFlight: 1,
				ThroughputTPS: 5, Requests: 1, Failures: 0},
		},
	}
}

// rowOrder returns the node ids in the order the table lists them.
func rowOrder(t *testing.T, frame string, ids []string) []string {
	t.Helper()
	type pos struct {
		id string
		at int
	}
	var found []pos
	for _, id := range ids {
		at := strings.Index(frame, "\n"+id+" ")
		require.GreaterOrEqual(t, at, 0, "row of %s missing in\n%s", id, frame)
		found = append(found, pos{id, at})
	}
	for i := range found {
		for j := i + 1; j < len(found); j++ {
			if found[j].at < found[i].at {
				found[i], found[j] = found[j], found[i]
			}
		}
	}
	out := make([]string, len(found))
	for i, p := range found {
		out[i] = p.id
	}
	return out
}

func TestRenderShowsMeshAndEveryNode(t *testing.T) {
	frame := render(sample(), 0, SortNode)
	for _, want := range []string{
		"mesh degraded", "nats://127.0.0.1:4222",
		"requests 1234", "success 1200", "failed 34", "tokens 98765", "retries 7", "dispatch failures 3",
		"unplaced 3 (404:1 503:2)", "req/s 12.5", "latency p50 41", "p99 512", "ttft p50 23",
		"NODE▼", "STATE", "CIRCUIT", "P50 MS", "P99 MS",
	} {
		assert.Contains(t, frame, want)
	}
	lines := strings.Split(frame, "\n")
	rowOf := func(id string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, id+" ") {
				return l
			}
		}
		t.Fatalf("no row for %s in\n%s", id, frame)
		return ""
	}
	tests := []struct {
		id    string
		cells []string
	}{
		{"a-healthy", []string{"us-west", "yes", "internal", "healthy", "closed", " 45 ", " 230 ", "3/16", "50.0", " 400 ", "llama-3-8b"}},
		{"b-degraded", []string{"eu-west", "confidential", "degraded", "half_open", " 1500 ", " 2600 ", "9/16", "bge-small"}},
		{"c-unhealthy", []string{"ap-south", " no ", "unhealthy", "open", " 800 ", " 9100 ", "0/8", " 30 ", "qwen-coder-7b"}},
		{"d-unknown", []string{"af-south", "unknown", "closed", " - "}},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			row := rowOf(tt.id)
			for _, c := range tt.cells {
				assert.Contains(t, row, c, "row %q", row)
			}
		})
	}
}

func TestRenderSortKeys(t *testing.T) {
	ids := []string{"a-healthy", "b-degraded", "c-unhealthy", "d-unknown"}
	tests := []struct {
		key  SortKey
		head string
		want []string
	}{
		{SortNode, "NODE▼", []string{"a-healthy", "b-degraded", "c-unhealthy", "d-unknown"}},
		{SortRegion, "REGION▼", []string{"d-unknown", "c-unhealthy", "b-degraded", "a-healthy"}},
		{SortState, "STATE▼", []string{"c-unhealthy", "b-degraded", "d-unknown", "a-healthy"}},
		{SortP50, "P50 MS▼", []string{"b-degraded", "c-unhealthy", "a-healthy", "d-unknown"}},
		{SortP99, "P99 MS▼", []string{"c-unhealthy", "b-degraded", "a-healthy", "d-unknown"}},
		{SortInFlight, "IN FLIGHT▼", []string{"b-degraded", "a-healthy", "d-unknown", "c-unhealthy"}},
		{SortThroughput, "TOK/S▼", []string{"a-healthy", "b-degraded", "d-unknown", "c-unhealthy"}},
		{SortRequests, "REQS▼", []string{"a-healthy", "b-degraded", "c-unhealthy", "d-unknown"}},
		{SortFailures, "FAILS▼", []string{"c-unhealthy", "b-degraded", "a-healthy", "d-unknown"}},
	}
	require.Len(t, tests, int(numSortKeys), "every sort key is covered")
	for _, tt := range tests {
		t.Run(tt.key.String(), func(t *testing.T) {
			frame := render(sample(), 0, tt.key)
			assert.Contains(t, frame, tt.head)
			assert.Equal(t, tt.want, rowOrder(t, frame, ids))
			assert.Equal(t, 1, strings.Count(frame, "▼"), "one sorted column")
		})
	}
}

func TestSortKeyCyclesAndParses(t *testing.T) {
	k := SortNode
	seen := map[SortKey]bool{}
	for range numSortKeys {
		seen[k] = true
		parsed, err := ParseSortKey(k.String())
		require.NoError(t, err)
		assert.Equal(t, k, parsed)
		k = k.Next()
	}
	assert.Equal(t, SortNode, k, "s wraps around")
	assert.Len(t, seen, int(numSortKeys))
	_, err := ParseSortKey("bogus")
	assert.Error(t, err)
}

func TestRenderWidthCutsLines(t *testing.T) {
	for _, l := range strings.Split(strings.TrimRight(render(sample(), 60, SortNode), "\n"), "\n") {
		assert.LessOrEqual(t, len([]rune(l)), 60, "line %q", l)
	}
}

func TestRenderNoNodes(t *testing.T) {
	frame := render(Snapshot{Mesh: record.MeshInitializing}, 80, SortNode)
	assert.Contains(t, frame, "mesh initializing")
	assert.Contains(t, frame, "no nodes registered")
	assert.Contains(t, frame, "req/s -")
}

func TestBuildSnapshotJoinsTheThreeAnswers(t *testing.T) {
	now := time.Now()
	cat := api.ListResponse{Nodes: []record.Node{
		{NodeID: "n2", Region: "eu", GPU: true, Clearance: wire.PrivacyConfidential, MaxConcurrency: 4,
			Models: []record.Model{{ModelID: "m1"}, {ModelID: "m2"}}},
		{NodeID: "n1", Region: "us", MaxConcurrency: 8},
	}}
	hl := api.HealthListResponse{Nodes: []record.Health{
		{NodeID: "n2", State: record.StateHealthy, Circuit: record.CircuitClosed, LatencyP50Ms: 10, LatencyP99Ms: 20,
			InFlight: 2, MaxConcurrency: 6, ThroughputTPS: 33},
		{NodeID: "gone", State: record.StateUnhealthy, Circuit: record.CircuitOpen},
	}}
	st := record.Stats{State: record.MeshReady, Counters: record.Counters{TotalRequests: 5},
		Nodes: map[string]record.Counters{"n2": {TotalRequests: 4, FailedRequests: 1}}}
	s := BuildSnapshot(cat, hl, st, now)
	assert.Equal(t, record.MeshReady, s.Mesh)
	assert.Equal(t, int64(5), s.Totals.TotalRequests)
	require.Len(t, s.Nodes, 3)
	assert.Equal(t, []string{"gone", "n1", "n2"}, []string{s.Nodes[0].ID, s.Nodes[1].ID, s.Nodes[2].ID})
	gone, n1, n2 := s.Nodes[0], s.Nodes[1], s.Nodes[2]
	assert.False(t, gone.Registered)
	assert.Equal(t, record.CircuitOpen, gone.Circuit)
	assert.Equal(t, record.StateUnknown, n1.State, "no health record yet")
	assert.Equal(t, 8, n1.MaxInFlight)
	assert.Equal(t, Node{ID: "n2", Region: "eu", GPU: true, Clearance: "confidential", Models: []string{"m1", "m2"},
		Registered: true, State: record.StateHealthy, Circuit: record.CircuitClosed, P50Ms: 10, P99Ms: 20,
		InFlight: 2, MaxInFlight: 6, ThroughputTPS: 33, Requests: 4, Failures: 1}, n2)

	next := s
	next.Time = now.Add(2 * time.Second)
	next.Totals.TotalRequests = 25
	next = next.WithRate(s)
	assert.True(t, next.RateKnown)
	assert.InDelta(t, 10.0, next.ReqPerSec, 1e-9)
	assert.False(t, s.WithRate(Snapshot{}).RateKnown, "no previous snapshot")
}
