package benchrouting

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/record"
)

// A tiny real run: two servers behind node agents on a real mesh, two
// strategies, short prompts. The tables have every column and a row per
// strategy, every request is answered, and the servers' own counters
// saw the shared prefixes hit.
func TestRoutingEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two meshes")
	}
	fleet, err := ParseFleet("h100,a10")
	require.NoError(t, err)
	var out, log bytes.Buffer
	file := filepath.Join(t.TempDir(), "report.md")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	strategies := []string{record.StrategyRoundRobin, record.StrategyExpectedTTFT}
	rep, err := Run(ctx, Options{
		Out: &out, Log: &log, OutFile: file, Fleet: fleet, TimeScale: 20,
		Strategies: strategies, Workloads: []string{WorkloadSharedPrefix}, Loads: []float64{0.5},
		Duration:     30 * time.Second,
		SharedPrefix: SharedPrefix{Groups: 2, SystemTokens: 600, QuestionMin: 10, QuestionMax: 20, Output: 8},
	})
	require.NoError(t, err)
	report := out.String()
	written, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, report, string(written), "--out gets the same report")

	header := "| " + strings.Join(columns(DefaultGoodputTTFT, []string{"h100", "a10"}), " | ") + " |"
	assert.Contains(t, report, header)
	for _, col := range []string{"TTFT p50", "TTFT p90", "TTFT p99", "ITL p50", "output tok/s", "goodput (TTFT ≤ 2.00 s)", "prefix hit rate", "errors", "share h100/a10"} {
		assert.Contains(t, header, col)
	}
	require.Len(t, rep.cells, 2)
	for _, c := range rep.cells {
		assert.Greater(t, c.requests, 5, "%s sent requests", c.strategy)
		assert.Zero(t, c.errors, "%s: %v", c.strategy, c.errCodes)
		assert.Equal(t, c.requests, c.ok)
		assert.Greater(t, c.ttft[0], 0.0)
		assert.GreaterOrEqual(t, c.ttft[2], c.ttft[1])
		assert.GreaterOrEqual(t, c.ttft[1], c.ttft[0])
		assert.Greater(t, c.tokensPerSec, 0.0)
		require.True(t, c.hitKnown, "the servers counted prefix queries")
		assert.Greater(t, c.hit, 0.3, "%s: two system prompts of 600 tokens hit after their first request", c.strategy)
		assert.InDelta(t, 1, c.share["h100"]+c.share["a10"], 1e-9)
	}
	// one row per strategy, with the errors column 0
	var rows []string
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "| 50% |") {
			rows = append(rows, line)
			cells := strings.Split(line, " | ")
			require.Len(t, cells, len(columns(DefaultGoodputTTFT, []string{"h100", "a10"})))
			assert.Equal(t, "0", cells[11], "errors: %s", line)
		}
	}
	require.Len(t, rows, 2)
	assert.Contains(t, rows[0], "| round_robin |")
	assert.Contains(t, rows[1], "**expected_ttft** (default)")
	assert.Contains(t, report, "### Targets")
	assert.Contains(t, report, "| errors below capacity, every strategy | 0 | 0 | yes |")
	assert.Contains(t, report, "not run", "no no_sharing cells to judge")
	assert.Equal(t, 2, strings.Count(log.String(), "shared_prefix"), "a progress line per run")
}

func TestRoutingOptions(t *testing.T) {
	o := Options{Quick: true}
	require.NoError(t, o.defaults())
	assert.Equal(t, QuickLoads, o.Loads)
	assert.Equal(t, QuickDuration, o.Duration)
	assert.Equal(t, Strategies, o.Strategies)
	assert.Len(t, o.Fleet, 8)
	assert.Equal(t, DefaultSharedPrefix, o.SharedPrefix)

	full := Options{}
	require.NoError(t, full.defaults())
	assert.Equal(t, DefaultLoads, full.Loads)
	assert.Equal(t, DefaultDuration, full.Duration)

	for name, bad := range map[string]Options{
		"strategy":       {Strategies: []string{"fastest"}},
		"workload":       {Workloads: []string{"chat"}},
		"load":           {Loads: []float64{0}},
		"time scale":     {TimeScale: -1},
		"cache fraction": {CacheFraction: 2},
		"shape":          {NoSharing: NoSharing{PromptMin: 10, PromptMax: 5, Output: 1}},
	} {
		assert.Error(t, bad.defaults(), name)
	}
}

func TestRoutingFormat(t *testing.T) {
	assert.Equal(t, "", fmtRange([]float64{1}))
	assert.Equal(t, " (40 ms–2.50 s)", fmtRange([]float64{2.5, 0.04, 1}))
	assert.Equal(t, "1.5 ms", fmtSeconds(0.0015))
	assert.Equal(t, "1/4.0", fmtRatio(2, 0.5))
	assert.Equal(t, "-10.0 %", fmtChange(0.9, 1))
	assert.Equal(t, "3 (2×429, 1×timeout)", fmtErrors(summary{errors: 3, errCodes: map[string]int{"timeout": 1, "429": 2}}))
}

func TestRoutingJudge(t *testing.T) {
	cell := func(w, strategy string, load, p90, hit, tps float64, errs int) cellResult {
		c := cellResult{workload: w, strategy: strategy, load: load}
		c.ok, c.errors, c.ttft[1], c.hit, c.hitKnown, c.tokensPerSec = 10, errs, p90, hit, true, tps
		if errs > 0 {
			c.errCodes = map[string]int{"503": errs}
		}
		return c
	}
	def, rr, p2 := record.StrategyExpectedTTFT, record.StrategyRoundRobin, record.StrategyPowerOfTwo
	o := &Options{Loads: []float64{0.5, 0.9}}
	rep := &Report{o: o, cells: []cellResult{
		cell(WorkloadSharedPrefix, rr, 0.9, 5, 0.2, 100, 0),
		cell(WorkloadSharedPrefix, def, 0.9, 0.4, 0.7, 100, 0),
		cell(WorkloadNoSharing, p2, 0.9, 2, 0, 100, 0),
		cell(WorkloadNoSharing, def, 0.9, 2.2, 0, 94, 0),
		cell(WorkloadNoSharing, def, 0.5, 1, 0, 50, 2),
	}}
	rep.Targets = rep.judge()
	got := map[string]Target{}
	for _, tg := range rep.Targets {
		got[tg.Name] = tg
	}
	met := func(name string) bool { t.Helper(); tg, ok := got[name]; require.True(t, ok, name); return tg.Met }
	assert.True(t, met("shared_prefix at 90%: TTFT p90, expected_ttft vs round_robin"), "0.4 ≤ 5/10")
	assert.True(t, met("shared_prefix at 90%: prefix hit rate, expected_ttft vs round_robin"), "0.7 ≥ 3 × 0.2")
	assert.False(t, met("no_sharing at 90%: TTFT p90, expected_ttft vs power_of_two"), "2.2 > 2 × 1.05")
	assert.False(t, met("no_sharing at 90%: output tokens/s, expected_ttft vs power_of_two"), "94 < 95")
	assert.False(t, got["no_sharing at 50%: TTFT p90, expected_ttft vs power_of_two"].Judged, "no power_of_two cell at 50 %")
	errs := got["errors below capacity, every strategy"]
	assert.False(t, errs.Met)
	assert.Contains(t, errs.Got, "no_sharing@50%")
	assert.False(t, rep.Met())

	rep.cells[1].ttft[1] = 0.6 // over 5/10
	for _, tg := range rep.judge() {
		if strings.HasPrefix(tg.Name, "shared_prefix at 90%: TTFT") {
			assert.False(t, tg.Met)
			assert.Contains(t, tg.Got, "1/8.3")
		}
	}
}
