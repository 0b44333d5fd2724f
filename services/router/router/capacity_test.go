package router

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// slotNode plays a node agent with a concurrency limit, as the real one
// behaves on the wire: a dispatch past its Fed-Ack-Deadline is dropped; with
// a free slot it acks accepted (with Fed-In-Flight / Fed-Max-Concurrency),
// holds the request for hold, answers the client and publishes its completed
// outcome; without one it acks busy (with the load headers).
type slotNode struct {
	id       string
	slots    int32
	hold     time.Duration
	inFlight atomic.Int32
	busy     atomic.Int32
	late     atomic.Int32
	mu       sync.Mutex
	served   []string // request ids in the order they were accepted
	tenants  []string // their tenants
}

func (e *env) slotNode(id string, slots int, hold time.Duration) *slotNode {
	e.t.Helper()
	n := &slotNode{id: id, slots: int32(slots), hold: hold}
	sub, err := e.nc.Subscribe(subject.Default.NodeInferAt(id, "*"), func(m *nats.Msg) {
		if ms, err := strconv.ParseInt(m.Header.Get(wire.HdrAckDeadline), 10, 64); err == nil && time.Now().UnixMilli() >= ms {
			n.late.Add(1)
			return
		}
		load := func(st string, in int32) *nats.Msg {
			return &nats.Msg{Header: nats.Header{wire.HdrStatus: {st}, wire.HdrInFlight: {strconv.Itoa(int(in))},
				wire.HdrMaxConcurrency: {strconv.Itoa(int(n.slots))}}}
		}
		in := n.inFlight.Add(1)
		if in > n.slots {
			n.inFlight.Add(-1)
			n.busy.Add(1)
			_ = m.RespondMsg(load(wire.StatusBusy, in-1))
			return
		}
		id := m.Header.Get(wire.HdrRequestID)
		n.mu.Lock()
		n.served = append(n.served, id)
		n.tenants = append(n.tenants, m.Header.Get(wire.HdrTenant))
		n.mu.Unlock()
		_ = m.RespondMsg(load(wire.StatusAccepted, in))
		go func() {
			time.Sleep(n.hold)
			rep := wire.Reply{Inbox: m.Header.Get(wire.HdrReplyTo), RequestID: id, Node: n.id}
			_ = e.nc.PublishMsg(rep.Done([]byte("from "+n.id), wire.DoneInfo{Tokens: 1, LatencyMs: 1}))
			n.inFlight.Add(-1)
			ev, _ := json.Marshal(record.Outcome{Kind: record.OutcomeCompleted, NodeID: n.id, RequestID: id, OK: true, Time: time.Now()})
			_ = e.nc.Publish(subject.Default.Outcome(n.id), ev)
		}()
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
	return n
}

func (n *slotNode) order() ([]string, []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.served...), append([]string(nil), n.tenants...)
}

// inferAll sends n requests at once and returns their errors.
func (e *env) inferAll(n int, r client.Request, timeout time.Duration) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			req := r
			req.Capability, req.Body = wire.CapGenerate, []byte("hi")
			_, errs[i] = e.c.Infer(ctx, req)
		})
	}
	wg.Wait()
	return errs
}

func TestIntegrationBusyIsNoFailure(t *testing.T) {
	// max_retries 0: a single failure would end the request, but busy
	// refusals are not failures, so the third node still gets it
	e := newEnv(t, func(c *Config) { c.Policy.MaxRetries = 0 })
	e.addNode(tnode{id: "a", region: "eu", health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", health: healthy(20)})
	e.addNode(tnode{id: "c", region: "eu", health: healthy(30)})
	e.fakeNode("a", always(wire.StatusBusy))
	e.fakeNode("b", always(wire.StatusBusy))
	e.fakeNode("c", always(wire.StatusAccepted))
	e.waitEligible("a", "b", "c")
	resp, err := e.infer(client.Request{})
	require.NoError(t, err)
	assert.Equal(t, "c", resp.Node)
	st := e.svc.Stats()
	assert.EqualValues(t, 2, st.Busy)
	assert.EqualValues(t, 0, st.Retries)
}

func TestIntegrationAckLoadIsLearned(t *testing.T) {
	e := newEnv(t, nil)
	// a is the better node; its ack says it is now full (2 of 2)
	e.addNode(tnode{id: "a", region: "eu", maxConc: 8, health: healthy(10)})
	e.addNode(tnode{id: "b", region: "eu", maxConc: 8, health: healthy(4000)})
	a := e.slotNode("a", 2, time.Hour) // holds its requests: only outcomes free them
	e.slotNode("b", 8, 10*time.Millisecond)
	e.waitEligible("a", "b")
	for i := 0; i < 2; i++ {
		go func() { _, _ = e.infer(client.Request{}) }()
	}
	natsembed.Eventually(t, 3*time.Second, func() error {
		n, _ := a.order()
		return natsembed.Check(len(n) == 2, "node a accepted %d requests, want 2", len(n))
	})
	en := e.svc.cache.lookup("a")
	// the ack's Fed-Max-Concurrency (2) replaced the catalog's 8, its
	// Fed-In-Flight filled the node: no heartbeat needed
	natsembed.Eventually(t, time.Second, func() error {
		return natsembed.Check(en.inFlight() == 2, "router sees %d in flight on a, want 2", en.inFlight())
	})
	out, werr := e.candidates(nats.Header{wire.HdrCapability: {wire.CapGenerate}})
	require.Nil(t, werr)
	for _, c := range out.Candidates {
		if c.NodeID == "a" {
			assert.False(t, c.Eligible)
			assert.Equal(t, "load", c.RejectedBy)
		}
	}
	// the next requests go to b without asking a
	for i := 0; i < 3; i++ {
		resp, err := e.infer(client.Request{})
		require.NoError(t, err)
		assert.Equal(t, "b", resp.Node)
	}
	assert.Zero(t, a.busy.Load(), "the full node was not asked")

	// a completed outcome of a frees one slot at once
	held, _ := a.order()
	ev, _ := json.Marshal(record.Outcome{Kind: record.OutcomeCompleted, NodeID: "a", RequestID: held[0], OK: true, Time: time.Now()})
	require.NoError(t, e.nc.Publish(subject.Default.Outcome("a"), ev))
	natsembed.Eventually(t, time.Second, func() error {
		return natsembed.Check(en.inFlight() == 1, "router sees %d in flight on a after a completion, want 1", en.inFlight())
	})
}

func TestIntegrationCapacityIsUsed(t *testing.T) {
	cases := []struct {
		name            string
		nodes, slots    int
		requests        int
		hold            time.Duration
		strategy        string
		wantQueuedAtAll bool
	}{
		{"3 nodes x 2 slots, 30 at once", 3, 2, 30, 30 * time.Millisecond, record.StrategyLeastLatency, true},
		{"4 nodes x 3 slots, 12 at once (exactly full)", 4, 3, 12, 200 * time.Millisecond, record.StrategyRoundRobin, false},
		{"2 nodes x 1 slot, 10 at once, power of two", 2, 1, 10, 20 * time.Millisecond, record.StrategyPowerOfTwo, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				c.Policy.Strategy = tc.strategy
				c.Policy.AckTimeoutMs = 2000
				c.Policy.MaxQueueMs = 10000
			})
			var ids []string
			var nodes []*slotNode
			for i := range tc.nodes {
				id := fmt.Sprintf("n%d", i)
				ids = append(ids, id)
				e.addNode(tnode{id: id, region: "eu", maxConc: tc.slots, health: healthy(float64(10 + i))})
				nodes = append(nodes, e.slotNode(id, tc.slots, tc.hold))
			}
			e.waitEligible(ids...)
			errs := e.inferAll(tc.requests, client.Request{}, 10*time.Second)
			for i, err := range errs {
				assert.NoError(t, err, "request %d", i)
			}
			served := 0
			for _, n := range nodes {
				got, _ := n.order()
				served += len(got)
				assert.Zero(t, n.late.Load(), "no dispatch arrived after its ack deadline")
			}
			assert.Equal(t, tc.requests, served, "each request served once")
			st := e.svc.Stats()
			assert.Zero(t, st.QueueTimeouts+st.QueueFull)
			assert.Zero(t, st.QueueLen)
			if tc.wantQueuedAtAll {
				assert.Positive(t, st.Queued, "more requests than slots: some waited in the queue")
			}
		})
	}
}

func TestIntegrationQueueLimits429(t *testing.T) {
	cases := []struct {
		name     string
		maxQueue int
		wait     time.Duration
		timeout  time.Duration
		want     string
	}{
		{"queue full: at once", 1, 5 * time.Second, 5 * time.Second, "queue is full"},
		{"max_queue_wait", 10, 150 * time.Millisecond, 5 * time.Second, "busy for"},
		{"deadline first", 10, 5 * time.Second, 400 * time.Millisecond, "before the request's deadline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.MaxQueue = tc.maxQueue; c.Policy.MaxQueueMs = int(tc.wait.Milliseconds()) })
			e.addNode(tnode{id: "a", region: "eu", maxConc: 1, health: healthy(10)})
			a := e.slotNode("a", 1, time.Hour)
			e.waitEligible("a")
			go func() { _, _ = e.infer(client.Request{}) }() // takes the one slot for good
			natsembed.Eventually(t, 3*time.Second, func() error {
				n, _ := a.order()
				return natsembed.Check(len(n) == 1, "node a accepted %d requests, want 1", len(n))
			})
			if tc.maxQueue == 1 {
				go func() { _, _ = e.infer(client.Request{}) }() // fills the queue
				natsembed.Eventually(t, 3*time.Second, func() error {
					return natsembed.Check(e.svc.Stats().QueueLen == 1, "queue holds %d, want 1", e.svc.Stats().QueueLen)
				})
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("hi")})
			took := time.Since(start)
			require.Error(t, err)
			assert.Equal(t, wire.CodeOverloaded, codeOf(t, err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
			switch tc.name {
			case "queue full: at once":
				assert.Less(t, took, time.Second)
				assert.EqualValues(t, 1, e.svc.Stats().QueueFull)
			case "max_queue_wait":
				assert.GreaterOrEqual(t, took, tc.wait)
				assert.Contains(t, err.Error(), "the 1 eligible node is busy")
			default:
				assert.Less(t, took, tc.timeout, "the router's 429 comes before the client's deadline")
			}
		})
	}
}

func TestIntegrationQueueIsFairAcrossTenants(t *testing.T) {
	const hold = 25 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.Policy.MaxQueueMs = 20000; c.Policy.AckTimeoutMs = 2000 })
	e.addNode(tnode{id: "a", region: "eu", maxConc: 1, health: healthy(10)})
	a := e.slotNode("a", 1, hold)
	e.waitEligible("a")

	// tenant flood keeps 30 requests waiting all the time
	stop := make(chan struct{})
	var flood sync.WaitGroup
	for range 30 {
		flood.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, _ = e.c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("x"), Tenant: "flood"})
				cancel()
			}
		})
	}
	defer func() { close(stop); flood.Wait() }()
	natsembed.Eventually(t, 5*time.Second, func() error {
		q := e.svc.Stats().QueueLen
		return natsembed.Check(q >= 20, "queue holds %d requests of tenant flood, want >= 20", q)
	})

	// tenant calm sends 5 requests, 3 ms apart: with one queue in arrival
	// order each would wait behind ~30 flood requests (~750 ms); round robin
	// over tenants serves calm every other slot
	var ids []string
	var lat []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 5 {
		id := fmt.Sprintf("calm-%d", i)
		ids = append(ids, id)
		wg.Go(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := e.c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Body: []byte("y"), Tenant: "calm", RequestID: id})
			assert.NoError(t, err, id)
			mu.Lock()
			lat = append(lat, time.Since(start))
			mu.Unlock()
		})
		time.Sleep(3 * time.Millisecond) // arrival order, not an assertion
	}
	wg.Wait()
	served, tenants := a.order()
	var calm []string
	for i, id := range served {
		if tenants[i] == "calm" {
			calm = append(calm, id)
		}
	}
	assert.Equal(t, ids, calm, "tenant calm is served in the order it sent")
	for _, l := range lat {
		// 5 calm requests interleaved with flood ones: ~10 slots of 25 ms;
		// arrival order would be ~30+ slots
		assert.Less(t, l, 20*hold, "a calm request waited %s: not fair", l)
	}
}
