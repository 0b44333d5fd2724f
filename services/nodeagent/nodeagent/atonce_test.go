package nodeagent

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// sleepyImmediate says it answers at once but takes d: what a node frozen
// mid-answer looks like to the router.
type sleepyImmediate struct {
	d       time.Duration
	started chan struct{}
}

func (b *sleepyImmediate) Name() string    { return "sleepy" }
func (b *sleepyImmediate) Immediate() bool { return true }
func (b *sleepyImmediate) Generate(ctx context.Context, _ backend.Call, emit func([]byte) error) (backend.Result, error) {
	if b.started != nil {
		b.started <- struct{}{}
	}
	time.Sleep(b.d)
	return backend.Result{Tokens: 1}, emit([]byte("late"))
}

// wireMsg is one message the test saw, in the order the server sent it.
type wireMsg struct {
	to     string // "ack" or "client"
	status string
	m      *nats.Msg
}

// dispatchSeen sends a dispatch as a router does, with its ack reply and
// the client's inbox under one subscription, so the order of the ack and
// the client's messages is the order the node published them in.
func dispatchSeen(t *testing.T, r *rig, node, id string, opts ...dispatchOpt) <-chan wireMsg {
	t.Helper()
	base := nats.NewInbox()
	seen := make(chan wireMsg, 64)
	sub, err := r.nc.Subscribe(base+".>", func(m *nats.Msg) {
		seen <- wireMsg{to: subject.LastToken(m.Subject), status: m.Header.Get(wire.HdrStatus), m: m}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	m := nats.NewMsg(subject.Default.NodeInferAt(node, wire.DefaultPrivacy.String()))
	m.Reply = base + ".ack"
	m.Data = []byte("hello")
	m.Header.Set(wire.HdrRequestID, id)
	m.Header.Set(wire.HdrReplyTo, base+".client")
	m.Header.Set(wire.HdrCapability, wire.CapGenerate)
	m.Header.Set(wire.HdrAttempt, "1")
	m.Header.Set(wire.HdrDeadline, strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
	m.Header.Set(wire.HdrAckDeadline, strconv.FormatInt(time.Now().Add(2*time.Second).UnixMilli(), 10))
	m.Header.Set(wire.HdrAckDone, "true")
	for _, o := range opts {
		o(m.Header)
	}
	require.NoError(t, r.nc.PublishMsg(m))
	return seen
}

func next(t *testing.T, seen <-chan wireMsg) wireMsg {
	t.Helper()
	select {
	case w := <-seen:
		return w
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return wireMsg{}
	}
}

// A whole answer from a backend that never blocks is answered where the
// dispatch arrived, and the ack goes after the final, saying done (DESIGN
// §4); its outcome says at_once. Everything else is acked accepted first.
func TestAnsweredAtOnce(t *testing.T) {
	immediate := synthetic.New(synthetic.Config{Tokens: 3})
	cases := []struct {
		name   string
		b      backend.Backend
		opts   []dispatchOpt
		atOnce bool
	}{
		{"whole answer, immediate backend, router reads done acks", immediate, nil, true},
		{"router does not read done acks", immediate, []dispatchOpt{without(wire.HdrAckDone)}, false},
		{"no ack deadline", immediate, []dispatchOpt{without(wire.HdrAckDeadline)}, false},
		{"stream", immediate, []dispatchOpt{stream}, false},
		{"backend that sleeps", synthetic.New(synthetic.Config{Tokens: 3, TokenDelay: time.Millisecond}), nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			outs := watchOutcomes(t, r.nc, "n1")
			r.agent(testConfig("n1", c.b))
			seen := dispatchSeen(t, r, "n1", "req-1", c.opts...)
			first := next(t, seen)
			if c.atOnce {
				require.Equal(t, "client", first.to, "the final before the ack")
				assert.Equal(t, wire.StatusDone, first.status)
				assert.NotEmpty(t, first.m.Data, "the whole answer")
				ack := next(t, seen)
				assert.Equal(t, "ack", ack.to)
				assert.Equal(t, wire.StatusDone, ack.status, "the ack says done")
			} else {
				require.Equal(t, "ack", first.to, "the ack before anything to the client")
				assert.Equal(t, wire.StatusAccepted, first.status)
				for {
					w := next(t, seen)
					require.Equal(t, "client", w.to, "one ack only")
					if wire.IsFinal(w.m) {
						assert.Equal(t, wire.StatusDone, w.status)
						break
					}
				}
			}
			o := outs.next(t)
			assert.Equal(t, "req-1", o.RequestID)
			assert.True(t, o.OK)
			assert.False(t, o.Silent)
			assert.Equal(t, c.atOnce, o.AtOnce)
			select {
			case w := <-seen:
				t.Fatalf("a message after the final and its ack: %s %q", w.to, w.status)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// An answer at once that is ready only at or after its ack deadline is not
// sent, and not acked: the router may have placed the request elsewhere.
// Its outcome is silent (someone else answers) and it counts as late.
func TestAnsweredAtOnceAfterTheAckDeadlineIsNotSent(t *testing.T) {
	r := newRig(t)
	outs := watchOutcomes(t, r.nc, "n1")
	svc, _ := r.agent(testConfig("n1", &sleepyImmediate{d: 300 * time.Millisecond}))
	seen := dispatchSeen(t, r, "n1", "req-late", func(h nats.Header) {
		h.Set(wire.HdrAckDeadline, strconv.FormatInt(time.Now().Add(100*time.Millisecond).UnixMilli(), 10))
	})
	o := outs.next(t)
	assert.Equal(t, "req-late", o.RequestID)
	assert.True(t, o.Silent, "no final went out")
	assert.False(t, o.AtOnce, "no done ack went out")
	select {
	case w := <-seen:
		t.Fatalf("the node sent %s %q after its ack deadline", w.to, w.status)
	case <-time.After(100 * time.Millisecond):
	}
	assert.Equal(t, int64(1), svc.lateDispatches.Load())
}

// A drain waits for an answer being made at once (it runs on the
// subscription's goroutine, counted in the work group): the client gets it,
// not a 503 cut, before the node deregisters.
func TestDrainWaitsForAnAnswerAtOnce(t *testing.T) {
	r := newRig(t)
	b := &sleepyImmediate{d: 300 * time.Millisecond, started: make(chan struct{}, 1)}
	svc, _ := r.agent(testConfig("n1", b))
	seen := dispatchSeen(t, r, "n1", "req-drain")
	<-b.started
	require.NoError(t, svc.Stop())
	final := next(t, seen)
	require.Equal(t, "client", final.to)
	assert.Equal(t, wire.StatusDone, final.status, "answered, not cut by the drain: %v", wire.ErrorFromHeader(final.m.Header))
	assert.Equal(t, "late", string(final.m.Data))
	assert.Equal(t, wire.StatusDone, next(t, seen).status, "then the done ack")
	assert.Len(t, r.cat.deregs(), 1)
}

// Outcomes of answers at once wait in windows even with outcome_window 0
// (their router settled them with the done ack): fewer messages than
// requests, and every request's outcome in them.
func TestAtOnceOutcomesBatchedByDefault(t *testing.T) {
	r := newRig(t)
	watch := watchOutcomeMsgs(t, r.nc, "n1")
	cfg := testConfig("n1", synthetic.New(synthetic.Config{Tokens: 1}))
	require.Zero(t, cfg.OutcomeWindow)
	r.agent(cfg)
	const n = 20
	want := map[string]bool{}
	for i := range n {
		id := "req-" + strconv.Itoa(i)
		want[id] = true
		seen := dispatchSeen(t, r, "n1", id)
		require.Equal(t, "client", next(t, seen).to)
		require.Equal(t, wire.StatusDone, next(t, seen).status)
	}
	natsembed.Eventually(t, 2*time.Second, func() error {
		ids, _ := watch.outcomes(t)
		return natsembed.Check(len(ids) == n, "%d of %d outcomes", len(ids), n)
	})
	ids, sizes := watch.outcomes(t)
	got := map[string]bool{}
	for _, id := range ids {
		got[id] = true
	}
	assert.Equal(t, want, got, "every request's outcome, once")
	assert.Less(t, len(sizes), n, "batched: fewer messages than outcomes (sizes %v)", sizes)
}

// outcomeWatch hands over the node's outcomes one at a time.
type outcomeWatch struct{ ch chan record.Outcome }

func watchOutcomes(t *testing.T, nc *nats.Conn, node string) *outcomeWatch {
	t.Helper()
	return &outcomeWatch{ch: subscribeOutcomes(t, nc, node)}
}

func (w *outcomeWatch) next(t *testing.T) record.Outcome {
	t.Helper()
	select {
	case o := <-w.ch:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
		return record.Outcome{}
	}
}
