package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/shared/metrics/metricstest"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

func TestSimserverFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, c simserver.Config)
		err   string
	}{
		{"defaults: h100", nil, func(t *testing.T, c simserver.Config) {
			assert.Equal(t, simserver.H100, c.Profile)
			assert.Equal(t, simserver.DefaultAddr, c.Addr)
			assert.Equal(t, 1.0, c.TimeScale)
			assert.Equal(t, []string{simserver.DefaultModel}, c.Models)
		}, ""},
		{"a profile", []string{"--profile", "CPU"}, func(t *testing.T, c simserver.Config) {
			assert.Equal(t, simserver.CPU, c.Profile)
		}, ""},
		{"overrides", []string{"--profile", "a10", "--decode-base", "3ms", "--decode-per-seq", "1us", "--prefill-rate", "123.5",
			"--kv-blocks", "64", "--block-size", "8", "--max-num-seqs", "2", "--max-num-batched-tokens", "100",
			"--max-model-len", "256", "--prefix-cache-blocks", "10", "--output-tokens", "5",
			"--model", "a,b", "--model", "c", "--seed", "9", "--time-scale", "2.5", "--listen", "127.0.0.1:0"},
			func(t *testing.T, c simserver.Config) {
				want := simserver.A10
				want.DecodeBase, want.DecodePerSeq, want.PrefillRate = 3*time.Millisecond, time.Microsecond, 123.5
				want.KVBlocks, want.BlockSize, want.MaxNumSeqs, want.MaxBatchedTokens = 64, 8, 2, 100
				want.MaxModelLen, want.PrefixCacheBlocks, want.OutputTokens = 256, 10, 5
				assert.Equal(t, want, c.Profile)
				assert.Equal(t, []string{"a", "b", "c"}, c.Models)
				assert.EqualValues(t, 9, c.Seed)
				assert.Equal(t, 2.5, c.TimeScale)
				assert.Equal(t, "127.0.0.1:0", c.Addr)
			}, ""},
		{"unknown profile", []string{"--profile", "tpu"}, nil, `unknown profile "tpu"`},
		{"zero asked for", []string{"--kv-blocks", "0"}, nil, "--kv-blocks 0: want >= 1"},
		{"negative duration", []string{"--decode-base", "-1ms"}, nil, "--decode-base -1ms: want > 0"},
		{"batching for free", []string{"--decode-per-seq", "0s"}, nil, "--decode-per-seq 0s: want > 0"},
		{"no prefill", []string{"--prefill-rate", "0"}, nil, "--prefill-rate 0"},
		{"bad time scale", []string{"--time-scale", "0"}, nil, "--time-scale 0"},
		{"cache beyond the pool", []string{"--kv-blocks", "10", "--prefix-cache-blocks", "11"}, nil, "prefix_cache_blocks 11"},
		{"batch over the step budget", []string{"--max-num-seqs", "9000"}, nil, "max_num_batched_tokens 8192"},
		{"bad listen", []string{"--listen", "nowhere"}, nil, "want host:port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &simOpts{}
			f := pflag.NewFlagSet("simserver", pflag.ContinueOnError)
			o.bind(f)
			require.NoError(t, f.Parse(c.args))
			cfg, err := o.config(f)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			c.check(t, cfg)
		})
	}
}

// syncBuffer is a bytes.Buffer the command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// `fedmesh simserver` serves until its context ends: its log names the
// URL, the API answers, and /metrics shows the flags' cache size.
func TestSimserverCommandServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := NewRoot()
	var stderr syncBuffer
	root.SetErr(&stderr)
	root.SetOut(&stderr)
	root.SetArgs([]string{"simserver", "--listen", "127.0.0.1:0", "--profile", "a10", "--kv-blocks", "100",
		"--time-scale", "50", "--model", "m1", "--log-format", "json"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	var url string
	natsembed.Eventually(t, 5*time.Second, func() error {
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var line struct {
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.URL != "" {
				url = line.URL
				return nil
			}
		}
		return natsembed.Check(false, "no url logged yet: %s", stderr.String())
	})
	m := metricstest.ScrapeURL(t, url+"/metrics")
	assert.Equal(t, 1.0, m.Value(simserver.MetricCacheConfig, metricstest.Labels{"num_gpu_blocks": "100", "block_size": "16"}))

	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model":"m1","prompt":"hi","max_tokens":3,"ignore_eos":true}`))
	require.NoError(t, err)
	var a struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&a))
	resp.Body.Close()
	require.Len(t, a.Choices, 1)
	assert.Len(t, strings.Fields(a.Choices[0].Text), 3)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("simserver did not stop with its context")
	}
	_, err = http.Get(url + "/health")
	assert.Error(t, err, "nothing listens any more")
}
