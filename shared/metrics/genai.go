package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OpenTelemetry GenAI semantic conventions (gen-ai-metrics.md) in
// Prometheus spelling: dots become underscores and the unit (s) a _seconds
// suffix; gen_ai.client.token.usage has the unit {token}, which Prometheus
// names leave out.
const (
	NameRequestDuration    = "gen_ai_server_request_duration_seconds"
	NameTimeToFirstToken   = "gen_ai_server_time_to_first_token_seconds"
	NameTimePerOutputToken = "gen_ai_server_time_per_output_token_seconds"
	NameTokenUsage         = "gen_ai_client_token_usage"

	// LabelModel is gen_ai.request.model: a model id the mesh knows.
	LabelModel = "gen_ai_request_model"
	// LabelOperation is gen_ai.operation.name; fedmesh puts the capability
	// (generate, code, embed, …) there.
	LabelOperation = "gen_ai_operation_name"
	// LabelTokenType is gen_ai.token.type: input or output.
	LabelTokenType = "gen_ai_token_type"
	// LabelErrorType is error.type, on failed requests only: the wire code.
	LabelErrorType = "error_type"

	TokenInput  = "input"
	TokenOutput = "output"
)

// Bucket boundaries the conventions recommend.
var (
	BucketsRequestDuration    = []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
	BucketsTimeToFirstToken   = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}
	BucketsTimePerOutputToken = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5}
	BucketsTokenUsage         = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
)

// GenAI holds the model-server histograms of one serving process (a node
// agent): request duration, time to first token, time per output token and
// token usage, labelled by operation and model (and error_type on the
// duration of failures). It is a prometheus.Collector.
type GenAI struct {
	duration, ttft, tpot, tokens *prometheus.HistogramVec
}

// NewGenAI makes the histograms; constLabels go on every series (a node
// agent's node id, say).
func NewGenAI(constLabels prometheus.Labels) *GenAI {
	h := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets,
			ConstLabels: constLabels}, append([]string{LabelOperation, LabelModel}, labels...))
	}
	return &GenAI{
		duration: h(NameRequestDuration, "GenAI server request duration (gen_ai.server.request.duration): from accepting "+
			"the request to its last output token, failures included (error_type).", BucketsRequestDuration, LabelErrorType),
		ttft: h(NameTimeToFirstToken, "Time to generate the first token for successful responses "+
			"(gen_ai.server.time_to_first_token), from accepting the request.", BucketsTimeToFirstToken),
		tpot: h(NameTimePerOutputToken, "Time per output token generated after the first token for successful responses "+
			"(gen_ai.server.time_per_output_token).", BucketsTimePerOutputToken),
		tokens: h(NameTokenUsage, "Tokens used per request (gen_ai.client.token.usage, unit {token}), by "+
			LabelTokenType+"; only counts a model server reports.", BucketsTokenUsage, LabelTokenType),
	}
}

// Request is one finished request as GenAI sees it.
type Request struct {
	Operation, Model string // label values, already bounded
	// Code is the wire error code; 0 for success.
	Code         int
	Duration     time.Duration
	TTFT         time.Duration // 0: no token came
	InputTokens  int           // 0: not reported
	OutputTokens int
}

// Observe records one finished request. Time to first token and time per
// output token are observed for successes only, as the conventions say;
// time per output token needs two tokens (it is the time after the first,
// over the tokens after the first).
func (g *GenAI) Observe(r Request) {
	g.duration.WithLabelValues(r.Operation, r.Model, ErrorType(r.Code)).Observe(r.Duration.Seconds())
	if r.Code == 0 {
		if r.TTFT > 0 {
			g.ttft.WithLabelValues(r.Operation, r.Model).Observe(r.TTFT.Seconds())
		}
		if r.OutputTokens > 1 && r.Duration > r.TTFT {
			g.tpot.WithLabelValues(r.Operation, r.Model).Observe((r.Duration - r.TTFT).Seconds() / float64(r.OutputTokens-1))
		}
	}
	if r.InputTokens > 0 {
		g.tokens.WithLabelValues(r.Operation, r.Model, TokenInput).Observe(float64(r.InputTokens))
	}
	if r.OutputTokens > 0 {
		g.tokens.WithLabelValues(r.Operation, r.Model, TokenOutput).Observe(float64(r.OutputTokens))
	}
}

// Describe implements prometheus.Collector.
func (g *GenAI) Describe(ch chan<- *prometheus.Desc) {
	for _, h := range []*prometheus.HistogramVec{g.duration, g.ttft, g.tpot, g.tokens} {
		h.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (g *GenAI) Collect(ch chan<- prometheus.Metric) {
	for _, h := range []*prometheus.HistogramVec{g.duration, g.ttft, g.tpot, g.tokens} {
		h.Collect(ch)
	}
}
