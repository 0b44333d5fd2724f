package metrics

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// NameWatchLag is the KV watch lag histogram.
const NameWatchLag = "fedmesh_kv_watch_lag_seconds"

// BucketsWatchLag span a local apply (a millisecond) to a watcher that fell
// far behind.
var BucketsWatchLag = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// WatchLag is fedmesh_kv_watch_lag_seconds{bucket}: how long after a bucket
// entry was written (its JetStream timestamp) a watcher came to apply it. It
// includes any clock difference between the NATS server and this host
// (negative lags count as 0). The zero value is ready to use; it is a
// prometheus.Collector.
type WatchLag struct {
	once sync.Once
	h    *prometheus.HistogramVec
}

func (w *WatchLag) vec() *prometheus.HistogramVec {
	w.once.Do(func() {
		w.h = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: NameWatchLag,
			Help: "Time from a KV bucket entry's write (server timestamp) to this watcher applying it, by bucket; " +
				"the values a watch starts with are not counted.", Buckets: BucketsWatchLag}, []string{"bucket"})
	})
	return w.h
}

// Wrap returns apply observing the lag of every entry written after Wrap
// ran: the current values a watch delivers first were written before it
// began, and their age is not lag.
func (w *WatchLag) Wrap(apply func(jetstream.KeyValueEntry)) func(jetstream.KeyValueEntry) {
	since := time.Now()
	h := w.vec()
	return func(e jetstream.KeyValueEntry) {
		if created := e.Created(); created.After(since) {
			h.WithLabelValues(e.Bucket()).Observe(max(time.Since(created), 0).Seconds())
		}
		apply(e)
	}
}

// Describe implements prometheus.Collector.
func (w *WatchLag) Describe(ch chan<- *prometheus.Desc) { w.vec().Describe(ch) }

// Collect implements prometheus.Collector.
func (w *WatchLag) Collect(ch chan<- prometheus.Metric) { w.vec().Collect(ch) }
