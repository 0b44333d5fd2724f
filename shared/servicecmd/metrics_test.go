package servicecmd_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// counting is a service with one counter of its own.
type counting struct {
	c       prometheus.Counter
	started atomic.Bool
}

func (s *counting) Start(context.Context) error   { s.started.Store(true); return nil }
func (s *counting) Stop() error                   { return nil }
func (s *counting) Metrics() prometheus.Collector { return s.c }

// freeAddr is a loopback address nothing listens on (just now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestMetricsListenFlagAndEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"off by default", nil, nil, ""},
		{"flag", nil, []string{"--metrics-listen", "127.0.0.1:9464"}, "127.0.0.1:9464"},
		{"env", map[string]string{"FEDMESH_METRICS_LISTEN": "0.0.0.0:9100"}, nil, "0.0.0.0:9100"},
		{"flag wins", map[string]string{"FEDMESH_METRICS_LISTEN": "0.0.0.0:9100"}, []string{"--metrics-listen", "off"}, "off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			common, err := servicecmd.Parse(servicecmd.Command{Name: "x"}, tc.args, lookup, io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tc.want, common.MetricsListen)
		})
	}
}

// A service command with --metrics-listen serves its service's series,
// labelled with service and instance, from Start until it stops.
func TestRunServesMetrics(t *testing.T) {
	srv := natsembed.StartForTest(t)
	addr := freeAddr(t)
	svc := &counting{c: prometheus.NewCounter(prometheus.CounterOpts{Name: "fedmesh_x_things_total", Help: "things"})}
	svc.c.Add(5)
	cmd := servicecmd.Command{Name: "x", ID: func() string { return "i1" },
		Build: func(servicecmd.Env) (servicecmd.Service, error) { return svc, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- servicecmd.Run(ctx, cmd, []string{"--nats-url", srv.ClientURL(), "--metrics-listen", addr},
			func(string) (string, bool) { return "", false }, io.Discard)
	}()
	url := "http://" + addr + "/metrics"
	natsembed.Eventually(t, 0, func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return natsembed.Check(resp.StatusCode == http.StatusOK, "status %d", resp.StatusCode)
	})
	assert.True(t, svc.started.Load(), "served once started")
	fams := metricstest.ScrapeURL(t, url)
	assert.Equal(t, 5.0, fams.Value("fedmesh_x_things_total", metricstest.Labels{"fedmesh_service": "x", "fedmesh_instance": "i1"}))
	assert.True(t, fams.Has("go_goroutines"), "and the process's own")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	_, err := http.Get(url)
	require.Error(t, err, "the listener is closed with the service")
}

// A taken metrics port fails before anything connects or is built.
func TestRunMetricsPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	built := false
	cmd := servicecmd.Command{Name: "x", Build: func(servicecmd.Env) (servicecmd.Service, error) {
		built = true
		return nil, errors.New("unreachable")
	}}
	err = servicecmd.Run(context.Background(), cmd, []string{"--nats-url", "nats://127.0.0.1:1", "--metrics-listen", ln.Addr().String()},
		func(string) (string, bool) { return "", false }, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "metrics: listen on "+ln.Addr().String())
	assert.Equal(t, 1, servicecmd.ExitCode(err))
	assert.False(t, built)
}
