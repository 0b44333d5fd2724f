package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	fedmetrics "github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
)

// scrape answers GET /metrics from the gateway's collector alone, as the
// --metrics-listen listener would (without the labels servicecmd adds).
func (e *env) scrape(t *testing.T) *http.Response {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(e.gw.Metrics()))
	rec := httptest.NewRecorder()
	fedmetrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, fedmetrics.Path, nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Result()
}

// The metrics moved off the API listener, to --metrics-listen.
func TestMetricsNotOnTheAPI(t *testing.T) {
	e := newEnv(t)
	resp := e.do(t, "GET", "/metrics", "", "", nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	reg, err := fedmetrics.ForService("gateway", "1", e.gw)
	require.NoError(t, err)
	m := metricstest.Scrape(t, fedmetrics.Handler(reg))
	assert.True(t, m.Has("fedmesh_gateway_active_streams"))
	assert.True(t, m.Has("go_goroutines"), "the process collectors come from the listener's registry")
	assert.Equal(t, []string{"1"}, m.LabelValues("fedmesh_gateway_active_streams", fedmetrics.LabelInstance))
}

// The model label takes only models the catalog lists or a node answered
// for: what a caller made up, or a model only ever refused, is "other".
func TestMetricsModelLabelBounded(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		model  string
		status int
	}{
		{modelChat, http.StatusOK},              // in the catalog
		{modelUnknown, http.StatusNotFound},     // the router: no node has it
		{modelBusy, http.StatusTooManyRequests}, // refused, never served
		{modelSplit, http.StatusOK},             // not listed, but a node answered for it
		{modelSplit, http.StatusOK},
		{"gpt-3.5-turbo", http.StatusNotFound}, // not a model id at all: the gateway 404s it
	} {
		body := `{"model":"` + tc.model + `","messages":[{"role":"user","content":"hi"}]}`
		resp := e.do(t, "POST", "/v1/chat/completions", keyAcme, body, nil)
		assert.Equal(t, tc.status, resp.StatusCode, tc.model)
	}
	m := metricstest.Scrape(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp := e.scrape(t)
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write([]byte(readAll(t, resp)))
	}))
	assert.Equal(t, []string{modelChat, fedmetrics.Other, modelSplit},
		m.LabelValues("fedmesh_gateway_requests_total", "model"))
	assert.Equal(t, 2.0, m.Value("fedmesh_gateway_requests_total", metricstest.Labels{"model": modelSplit}))
	assert.Equal(t, 2.0, m.Value("fedmesh_gateway_errors_total", metricstest.Labels{"model": fedmetrics.Other, "code": "404"}))
	problems, err := testutil.CollectAndLint(e.gw.Metrics())
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
	for _, name := range m.Names() {
		for _, s := range m.Series(name) {
			for k, v := range s.Labels {
				assert.NotContains(t, []string{modelUnknown, modelBusy, "gpt-3.5-turbo"}, v, "%s{%s}", name, k)
			}
		}
	}
}
