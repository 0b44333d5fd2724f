// Package metricstest scrapes a /metrics handler the way Prometheus does
// (HTTP, text format) and answers the questions tests ask: is a family
// there, what is a series' value, which values does a label take.
package metricstest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fedmesh/fedmesh/shared/metrics"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Scrape gets /metrics from h and parses it; any failure fails the test.
func Scrape(t testing.TB, h http.Handler) Families {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, metrics.Path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", metrics.Path, rec.Code, rec.Body.String())
	}
	return parse(t, rec.Body)
}

// ScrapeURL gets url over HTTP and parses it.
func ScrapeURL(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return parse(t, resp.Body)
}

func parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return fams
}

// Labels of one series.
type Labels map[string]string

// Series is one series of a family: its labels and its value (a counter's
// or gauge's value; a histogram's or summary's sample count).
type Series struct {
	Labels Labels
	Value  float64
	// Sum is a histogram's or summary's sample sum; 0 otherwise.
	Sum float64
}

// Series lists the family's series; none when it is absent.
func (f Families) Series(name string) []Series {
	fam := f[name]
	if fam == nil {
		return nil
	}
	out := make([]Series, 0, len(fam.GetMetric()))
	for _, m := range fam.GetMetric() {
		s := Series{Labels: Labels{}}
		for _, lp := range m.GetLabel() {
			s.Labels[lp.GetName()] = lp.GetValue()
		}
		switch {
		case m.Counter != nil:
			s.Value = m.GetCounter().GetValue()
		case m.Gauge != nil:
			s.Value = m.GetGauge().GetValue()
		case m.Histogram != nil:
			s.Value, s.Sum = float64(m.GetHistogram().GetSampleCount()), m.GetHistogram().GetSampleSum()
		case m.Summary != nil:
			s.Value, s.Sum = float64(m.GetSummary().GetSampleCount()), m.GetSummary().GetSampleSum()
		case m.Untyped != nil:
			s.Value = m.GetUntyped().GetValue()
		}
		out = append(out, s)
	}
	return out
}

// Has reports whether the family is present with at least one series.
func (f Families) Has(name string) bool { return len(f.Series(name)) > 0 }

// Type is the family's type (COUNTER, GAUGE, HISTOGRAM, …); "" when absent.
func (f Families) Type(name string) string {
	if fam := f[name]; fam != nil {
		return fam.GetType().String()
	}
	return ""
}

// Sum adds the values of the series whose labels include match, and says
// whether any did.
func (f Families) Sum(name string, match Labels) (float64, bool) {
	total, found := 0.0, false
	for _, s := range f.Series(name) {
		if s.Labels.match(match) {
			total += s.Value
			found = true
		}
	}
	return total, found
}

// Value is Sum without the flag: 0 when nothing matched.
func (f Families) Value(name string, match Labels) float64 {
	v, _ := f.Sum(name, match)
	return v
}

// LabelValues lists, sorted and once each, the values label takes in the
// family (every family when name is "").
func (f Families) LabelValues(name, label string) []string {
	var vals []string
	for fname := range f {
		if name != "" && fname != name {
			continue
		}
		for _, s := range f.Series(fname) {
			if v, ok := s.Labels[label]; ok && !slices.Contains(vals, v) {
				vals = append(vals, v)
			}
		}
	}
	sort.Strings(vals)
	return vals
}

// Names lists the families, sorted.
func (f Families) Names() []string {
	out := make([]string, 0, len(f))
	for n := range f {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (l Labels) match(want Labels) bool {
	for k, v := range want {
		if l[k] != v {
			return false
		}
	}
	return true
}
