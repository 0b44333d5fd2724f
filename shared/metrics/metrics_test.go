package metrics_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/lifecycle"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

func TestLabelSet(t *testing.T) {
	l := metrics.NewLabelSet(3, "llama-3-8b", "", "bge-small")
	for _, tc := range []struct{ in, want string }{
		{"llama-3-8b", "llama-3-8b"},
		{"bge-small", "bge-small"},
		{"", ""},
		{"gpt-4-from-a-caller", metrics.Other},
		{"LLAMA-3-8B", metrics.Other},
	} {
		assert.Equal(t, tc.want, l.Value(tc.in), tc.in)
	}
	assert.Equal(t, 2, l.Len(), "the empty value is not kept")

	assert.True(t, l.Add("qwen-coder-7b"))
	assert.Equal(t, "qwen-coder-7b", l.Value("qwen-coder-7b"))
	assert.False(t, l.Add("one-too-many"), "full at 3")
	assert.Equal(t, metrics.Other, l.Value("one-too-many"))
	assert.False(t, l.Add(""))

	l.Replace("x", "y", "z", "w")
	assert.Equal(t, 3, l.Len(), "Replace keeps at most max")
	assert.Equal(t, metrics.Other, l.Value("llama-3-8b"), "Replace forgets what it was not given")
	assert.Equal(t, "x", l.Value("x"))

	assert.Equal(t, metrics.DefaultMaxValues, func() int {
		d := metrics.NewLabelSet(0)
		for i := range metrics.DefaultMaxValues + 10 {
			d.Add(strings.Repeat("m", i+1))
		}
		return d.Len()
	}())
}

func TestErrorTypeAndOperation(t *testing.T) {
	for code, want := range map[int]string{0: "", 503: "503", 499: "499", 100: "100", 999: "999", 42: metrics.ErrorOther, 1000: metrics.ErrorOther, -1: metrics.ErrorOther} {
		assert.Equal(t, want, metrics.ErrorType(code), code)
	}
	for c, want := range map[string]string{"generate": "generate", "embed": "embed", "code": "code", "": "",
		"custom.mine": metrics.Other, "Generate": metrics.Other} {
		assert.Equal(t, want, metrics.Operation(c), c)
	}
}

func TestGenAIObserve(t *testing.T) {
	g := metrics.NewGenAI(prometheus.Labels{"node": "n1"})
	g.Observe(metrics.Request{Operation: "generate", Model: "m", Duration: 1100 * time.Millisecond, TTFT: 100 * time.Millisecond, OutputTokens: 11, InputTokens: 7})
	g.Observe(metrics.Request{Operation: "generate", Model: "m", Code: 504, Duration: 2 * time.Second, TTFT: 50 * time.Millisecond, OutputTokens: 3})
	g.Observe(metrics.Request{Operation: "embed", Model: "e", Duration: 10 * time.Millisecond, OutputTokens: 1})

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(g))
	fams := gather(t, reg)

	dur := fams[metrics.NameRequestDuration]
	require.NotNil(t, dur)
	counts := map[string]uint64{}
	for _, m := range dur.GetMetric() {
		counts[labels(m)] = m.GetHistogram().GetSampleCount()
	}
	assert.Equal(t, map[string]uint64{
		"error_type=,gen_ai_operation_name=generate,gen_ai_request_model=m,node=n1":    1,
		"error_type=504,gen_ai_operation_name=generate,gen_ai_request_model=m,node=n1": 1,
		"error_type=,gen_ai_operation_name=embed,gen_ai_request_model=e,node=n1":       1,
	}, counts)

	ttft := fams[metrics.NameTimeToFirstToken]
	require.NotNil(t, ttft)
	require.Len(t, ttft.GetMetric(), 1, "successes only, and only with a first token")
	assert.InDelta(t, 0.1, ttft.GetMetric()[0].GetHistogram().GetSampleSum(), 1e-9)

	tpot := fams[metrics.NameTimePerOutputToken]
	require.NotNil(t, tpot)
	require.Len(t, tpot.GetMetric(), 1, "successes with two tokens or more")
	assert.InDelta(t, 0.1, tpot.GetMetric()[0].GetHistogram().GetSampleSum(), 1e-9, "(1.1 s - 0.1 s) / 10 tokens")

	tokens := map[string]float64{}
	for _, m := range fams[metrics.NameTokenUsage].GetMetric() {
		tokens[labels(m)] = m.GetHistogram().GetSampleSum()
	}
	assert.Equal(t, map[string]float64{
		"gen_ai_operation_name=generate,gen_ai_request_model=m,gen_ai_token_type=input,node=n1":  7,
		"gen_ai_operation_name=generate,gen_ai_request_model=m,gen_ai_token_type=output,node=n1": 14,
		"gen_ai_operation_name=embed,gen_ai_request_model=e,gen_ai_token_type=output,node=n1":    1,
	}, tokens)

	problems, err := testutil.CollectAndLint(g)
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")

	// The buckets are the conventions'.
	h := ttft.GetMetric()[0].GetHistogram()
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	assert.Equal(t, metrics.BucketsTimeToFirstToken, bounds)
}

// Only entries written after the watch began count as lag.
func TestWatchLag(t *testing.T) {
	s := natsembed.StartForTest(t)
	nc := natsembed.ConnectForTest(t, s)
	set := natsembed.BucketsForTest(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := set.Config.Put(ctx, "before", []byte("{}"))
	require.NoError(t, err)

	var lag metrics.WatchLag
	applied := make(chan string, 8)
	g := lifecycle.NewGroup()
	t.Cleanup(g.Stop)
	require.NoError(t, buckets.Follow(ctx, g, set.Config, lag.Wrap(func(e jetstream.KeyValueEntry) { applied <- e.Key() })))
	assert.Equal(t, "before", <-applied)
	assert.Equal(t, 0, testutil.CollectAndCount(&lag), "the current values are not lag")

	_, err = set.Config.Put(ctx, "after", []byte("{}"))
	require.NoError(t, err)
	assert.Equal(t, "after", <-applied)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(&lag))
	fam := gather(t, reg)[metrics.NameWatchLag]
	require.NotNil(t, fam)
	require.Len(t, fam.GetMetric(), 1)
	m := fam.GetMetric()[0]
	assert.Equal(t, "bucket="+set.Config.Bucket(), labels(m))
	assert.Equal(t, uint64(1), m.GetHistogram().GetSampleCount())
	assert.Less(t, m.GetHistogram().GetSampleSum(), 5.0, "a local watch applies within seconds")
}

type fakeSource struct{ c prometheus.Counter }

func (f fakeSource) Metrics() prometheus.Collector { return f.c }

func TestServerAndForService(t *testing.T) {
	for addr, want := range map[string]bool{"": false, "off": false, " OFF ": false, "127.0.0.1:9464": true, ":0": true} {
		assert.Equal(t, want, metrics.Enabled(addr), addr)
	}

	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "fedmesh_test_things_total", Help: "things"})
	c.Add(3)
	reg, err := metrics.ForService("router", "r1", fakeSource{c})
	require.NoError(t, err)
	plain, err := metrics.ForService("router", "r2", struct{}{})
	require.NoError(t, err, "a service without metrics still gets the process's")
	assert.NotContains(t, names(t, plain), "fedmesh_test_things_total")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := metrics.Listen(ctx, "127.0.0.1:0")
	require.NoError(t, err)
	_, err = metrics.Listen(ctx, srv.Addr())
	require.Error(t, err, "a taken port fails at Listen")
	srv.Serve(reg)

	body := get(t, srv.URL(), http.StatusOK)
	assert.Contains(t, body, `fedmesh_test_things_total{fedmesh_instance="r1",fedmesh_service="router"} 3`)
	assert.Contains(t, body, "go_goroutines ")
	get(t, "http://"+srv.Addr()+"/", http.StatusNotFound)

	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close(), "idempotent")
	_, err = http.Get(srv.URL())
	require.Error(t, err, "closed")

	// Close without Serve frees the port.
	idle, err := metrics.Listen(ctx, "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, idle.Close())
	again, err := metrics.Listen(ctx, idle.Addr())
	require.NoError(t, err)
	require.NoError(t, again.Close())
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, status, resp.StatusCode, string(b))
	return string(b)
}

func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := g.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func names(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	var out []string
	for n := range gather(t, g) {
		out = append(out, n)
	}
	return out
}

// labels renders a series' labels as k=v,… in name order.
func labels(m *dto.Metric) string {
	var parts []string
	for _, lp := range m.GetLabel() {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	return strings.Join(parts, ",")
}
