package devmesh

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// `fedmesh dev` serves every part's series from one listener: the GenAI
// histograms of the nodes, the routers', health's, the catalog's and the
// gateway's own, each part told apart by fedmesh_service and
// fedmesh_instance; a made-up model labels nothing; a stopped node's series
// go with it.
func TestMetricsOfEveryPart(t *testing.T) {
	s := natsembed.StartForTest(t)
	gw := gateway.DefaultConfig()
	gw.Addr = "127.0.0.1:0"
	gw.Keys = map[string]gateway.Tenant{"test-key": {ID: "dev"}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Start(ctx, Options{Server: s, Log: natsembed.Logger(t), Routers: 2, Nodes: DemoNodes()[:2], Gateway: &gw,
		MetricsListen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	require.NotEmpty(t, m.MetricsURL())

	c, err := client.New(natsembed.ConnectForTest(t, s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	natsembed.Eventually(t, 0, func() error { // the nodes are eligible once health has judged them
		_, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Model: DemoChatModel, Body: []byte("hi")})
		return err
	})
	const n = 4
	for range n {
		st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Model: DemoChatModel, Body: []byte("hi")})
		require.NoError(t, err)
		for range st.Chunks() {
		}
		_, err = st.Result()
		require.NoError(t, err)
	}
	_, err = c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Model: "bogus-model-from-a-caller", Body: []byte("hi")})
	require.Error(t, err)
	for _, model := range []string{DemoChatModel, "bogus-model-from-a-caller"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.Gateway.Addr()+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer test-key")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}

	var f metricstest.Families
	natsembed.Eventually(t, 0, func() error {
		f = metricstest.ScrapeURL(t, m.MetricsURL())
		got := f.Value(metrics.NameRequestDuration, metricstest.Labels{metrics.LabelModel: DemoChatModel})
		return natsembed.Check(got >= n+1, "requests observed by the nodes: %v", got)
	})
	assert.Equal(t, []string{"catalog", "gateway", "health", "nodeagent", "router"}, f.LabelValues("", metrics.LabelService))
	assert.Equal(t, []string{"1", "2"}, f.LabelValues("fedmesh_router_requests_total", metrics.LabelInstance))
	assert.Equal(t, []string{"eu-west-gpu-1", "us-west-gpu-1"}, f.LabelValues("fedmesh_node_in_flight", "node"))
	for _, name := range []string{metrics.NameTimeToFirstToken, metrics.NameTimePerOutputToken, metrics.NameTokenUsage} {
		assert.Positive(t, f.Value(name, metricstest.Labels{metrics.LabelModel: DemoChatModel, metrics.LabelOperation: wire.CapGenerate}), name)
	}
	assert.Equal(t, float64(n+2), f.Value("fedmesh_router_placed_total", nil), "placed over both routers (one through the gateway)")
	assert.Equal(t, 2.0, f.Value("fedmesh_catalog_nodes", nil))
	assert.Equal(t, 2.0, f.Value("fedmesh_health_circuit_state", metricstest.Labels{"state": "closed"}))
	assert.True(t, f.Has("fedmesh_gateway_active_streams"))
	assert.True(t, f.Has("go_goroutines"), "the process's own series, once")
	assert.True(t, f.Has(metrics.NameWatchLag))
	// Every family issue 17 asks for, from the part that owns it, in the one scrape.
	for _, fam := range []struct{ name, service string }{
		{metrics.NameRequestDuration, "nodeagent"}, {metrics.NameTimeToFirstToken, "nodeagent"},
		{metrics.NameTimePerOutputToken, "nodeagent"}, {metrics.NameTokenUsage, "nodeagent"},
		{"fedmesh_router_decisions_total", "router"}, {"fedmesh_router_retries_total", "router"},
		{"fedmesh_router_queue_wait_seconds", "router"}, {"fedmesh_health_circuit_state", "health"},
		{"fedmesh_health_dispatch_failures_total", "health"}, {"fedmesh_catalog_heartbeats_received_total", "catalog"},
		{metrics.NameWatchLag, "router"}, {metrics.NameWatchLag, "health"},
	} {
		assert.Contains(t, f.LabelValues(fam.name, metrics.LabelService), fam.service, "%s from the %s", fam.name, fam.service)
	}
	assert.Equal(t, []string{record.DefaultPolicy().Strategy}, f.LabelValues("fedmesh_router_decisions_total", "strategy"))
	assert.NotEmpty(t, f.LabelValues("fedmesh_router_decisions_total", "decided_by"))
	assert.Positive(t, f.Value("fedmesh_catalog_heartbeats_received_total", nil))
	for _, name := range f.Names() {
		for _, s := range f.Series(name) {
			for k, v := range s.Labels {
				assert.NotContains(t, v, "bogus", "%s{%s=%q}", name, k, v)
			}
		}
	}

	dashboardSeriesExist(t, f)

	require.NoError(t, m.StopNode("eu-west-gpu-1"))
	f = metricstest.Scrape(t, m.MetricsHandler())
	assert.Equal(t, []string{"us-west-gpu-1"}, f.LabelValues("fedmesh_node_in_flight", "node"))

	url := m.MetricsURL()
	m.Stop()
	_, err = http.Get(url)
	require.Error(t, err, "the listener stops with the mesh")
}

// dashboardSeriesExist: every series the Grafana dashboard queries is one
// the mesh exports, and its data source is the import's input.
func dashboardSeriesExist(t *testing.T, f metricstest.Families) {
	t.Helper()
	raw, err := os.ReadFile("../../../../deploy/grafana/fedmesh.json")
	require.NoError(t, err)
	var dash struct {
		Inputs []struct{ Name, PluginID string } `json:"__inputs"`
		Panels []struct {
			Type    string `json:"type"`
			Targets []struct {
				Expr       string               `json:"expr"`
				Datasource struct{ UID string } `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.Len(t, dash.Inputs, 1)
	assert.Equal(t, "DS_PROMETHEUS", dash.Inputs[0].Name)
	labels := map[string]bool{}
	for _, fam := range f.Names() {
		for _, s := range f.Series(fam) {
			for k := range s.Labels {
				labels[k] = true
			}
		}
	}
	names := regexp.MustCompile(`\b(?:fedmesh|gen_ai)_[a-z_]+\b`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			assert.Equal(t, "${DS_PROMETHEUS}", tg.Datasource.UID)
			for _, name := range names.FindAllString(tg.Expr, -1) {
				if labels[name] {
					continue // a label (gen_ai_request_model, fedmesh_service), not a series
				}
				queried++
				family := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(name, suffix); ok && f[base] != nil {
						family = base
					}
				}
				assert.True(t, f.Has(family), "dashboard queries %s, which the mesh does not export", name)
			}
		}
	}
	assert.Greater(t, queried, 30)
}
