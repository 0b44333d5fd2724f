package nodeagent

import (
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// outcomeMsgs records every message on a node's outcome subject as it came.
type outcomeMsgs struct {
	mu   sync.Mutex
	msgs [][]byte
	at   []time.Time
}

func watchOutcomeMsgs(t *testing.T, nc *nats.Conn, node string) *outcomeMsgs {
	t.Helper()
	w := &outcomeMsgs{}
	sub, err := nc.Subscribe(subject.Default.Outcome(node), func(m *nats.Msg) {
		w.mu.Lock()
		w.msgs = append(w.msgs, m.Data)
		w.at = append(w.at, time.Now())
		w.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return w
}

// outcomes decodes every message: the request ids in order and each
// message's size (0 for a lone outcome sent as a JSON object).
func (w *outcomeMsgs) outcomes(t *testing.T) (ids []string, sizes []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, data := range w.msgs {
		outs, err := record.DecodeOutcomes(subject.Default.Outcome("n1"), data)
		require.NoError(t, err)
		size := len(outs)
		if data[0] != '[' {
			size = 0
		}
		sizes = append(sizes, size)
		for _, o := range outs {
			ids = append(ids, o.RequestID)
		}
	}
	return ids, sizes
}

// testOutcomeWindow is the batching window of these tests.
const testOutcomeWindow = 5 * time.Millisecond

// burst dispatches n requests to a node with outcome window w, lets them
// all finish at once, and returns the outcomes' request ids and message
// sizes (0 for a single object) once all n are in and no more come.
func burst(t *testing.T, n int, w time.Duration) (ids []string, sizes []int) {
	t.Helper()
	r := newRig(t)
	watch := watchOutcomeMsgs(t, r.nc, "n1")
	g := newGate()
	g.started = make(chan string, n)
	cfg := testConfig("n1", g)
	cfg.OutcomeWindow = w
	cfg.MaxConcurrency = n
	r.agent(cfg)
	want := map[string]bool{}
	for range n {
		want[r.dispatch("n1", "x").id] = true
	}
	g.waitStarted(t, n)
	close(g.release) // all of them finish at once
	natsembed.Eventually(t, 5*time.Second, func() error {
		ids, sizes = watch.outcomes(t)
		return natsembed.Check(len(ids) >= n, "%d of %d outcomes arrived", len(ids), n)
	})
	natsembed.Never(t, 3*testOutcomeWindow, func() error {
		got, _ := watch.outcomes(t)
		return natsembed.Check(len(got) == n, "%d outcomes, want %d", len(got), n)
	})
	seen := map[string]bool{}
	for _, id := range ids {
		assert.True(t, want[id], "an outcome of request %s, never dispatched", id)
		assert.False(t, seen[id], "request %s: a second outcome", id)
		seen[id] = true
	}
	return ids, sizes
}

func TestOutcomesBatchedUnderLoad(t *testing.T) {
	const n = 80
	_, sizes := burst(t, n, testOutcomeWindow)
	assert.Less(t, len(sizes), n/2, "outcomes of one burst go out in batches: %v", sizes)
	for _, s := range sizes {
		assert.LessOrEqual(t, s, OutcomeBatchMax)
		assert.NotEqual(t, 1, s, "one outcome goes out as an object, not a batch of one")
	}
	assert.Zero(t, sizes[0], "the first outcome after a quiet spell goes out at once, alone")
}

// Without a window (the default) a burst still goes out one outcome per
// message.
func TestOutcomesUnbatchedByDefault(t *testing.T) {
	const n = 40
	_, sizes := burst(t, n, 0)
	assert.Len(t, sizes, n)
	for _, s := range sizes {
		assert.Zero(t, s, "each outcome alone, as a JSON object")
	}
}

func TestOutcomeAloneWhenQuiet(t *testing.T) {
	r := newRig(t)
	w := watchOutcomeMsgs(t, r.nc, "n1")
	cfg := testConfig("n1", synthetic.New(synthetic.Config{}))
	cfg.OutcomeWindow = testOutcomeWindow
	r.agent(cfg)
	for i := range 3 {
		c := r.dispatch("n1", "x")
		c.read(t, 2*time.Second)
		natsembed.Eventually(t, 2*time.Second, func() error {
			ids, _ := w.outcomes(t)
			return natsembed.Check(len(ids) == i+1, "%d outcomes after %d requests", len(ids), i+1)
		})
		time.Sleep(3 * testOutcomeWindow) // quiet: the window closes
	}
	ids, sizes := w.outcomes(t)
	assert.Len(t, ids, 3)
	assert.Equal(t, []int{0, 0, 0}, sizes, "a lightly loaded node sends each outcome at once, as a JSON object")
	// each arrived before the window could have ended: sent at once
	w.mu.Lock()
	defer w.mu.Unlock()
	var o record.Outcome
	require.NoError(t, json.Unmarshal(w.msgs[0], &o))
	assert.Equal(t, record.OutcomeCompleted, o.Kind)
}

// Outcomes still waiting for their window when the node stops go out before
// it deregisters.
func TestOutcomesOutBeforeDeregister(t *testing.T) {
	r := newRig(t)
	// one subscription sees both subjects in the order the server got them
	spy, err := r.conn().SubscribeSync(">")
	require.NoError(t, err)
	require.NoError(t, r.nc.Flush())
	const n = 10
	g := newGate()
	cfg := testConfig("n1", g)
	cfg.OutcomeWindow = testOutcomeWindow
	cfg.MaxConcurrency = n
	s, _ := r.agent(cfg)
	for range n {
		r.dispatch("n1", "x")
	}
	g.waitStarted(t, n)
	close(g.release)
	// all finished (their outcomes handed on), polled without sleeping so
	// the Stop below comes before their window ends
	for end := time.Now().Add(2 * time.Second); ; runtime.Gosched() {
		s.mu.Lock()
		active := s.active
		s.mu.Unlock()
		if active == 0 {
			break
		}
		require.True(t, time.Now().Before(end), "%d requests still running", active)
	}
	require.NoError(t, s.Stop())
	var ids []string
	for {
		m, err := spy.NextMsg(2 * time.Second)
		require.NoError(t, err, "no deregister")
		if m.Subject == subject.Default.CatalogDeregisterAs("n1") {
			break
		}
		if m.Subject == subject.Default.Outcome("n1") {
			outs, err := record.DecodeOutcomes(m.Subject, m.Data)
			require.NoError(t, err)
			for _, o := range outs {
				ids = append(ids, o.RequestID)
			}
		}
	}
	assert.Len(t, ids, n, "every outcome is out before the deregister")
}
