package router

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Node agents batch their completed outcomes (a JSON array on
// fed.outcome.<node>): each completion of a batch ends its dispatch, frees
// its slot and wakes a queued request, as one sent alone does; an element
// that does not decode spoils only itself.
func TestIntegrationBatchedOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name string
		body func(ids []string) []byte
	}{
		{"one batch", func(ids []string) []byte {
			return mustJSON(t, []record.Outcome{completedOf("a", ids[0]), completedOf("a", ids[1])})
		}},
		{"a batch with bad elements", func(ids []string) []byte {
			return []byte(`[{"kind":"completed","node_id":"a","request_id":7},` + string(mustJSON(t, completedOf("a", ids[0]))) +
				`,"nonsense",` + string(mustJSON(t, completedOf("a", ids[1]))) + `]`)
		}},
		{"one by one", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Policy.MaxQueueMs = 10000 })
			e.addNode(tnode{id: "a", region: "eu", maxConc: 2, health: healthy(10)})
			a := e.slotNode("a", 2, time.Hour) // holds its requests: only the outcomes below free them
			e.waitEligible("a")
			for range 2 {
				go func() { _, _ = e.infer(client.Request{}) }()
			}
			var ids []string
			natsembed.Eventually(t, 3*time.Second, func() error {
				ids, _ = a.order()
				return natsembed.Check(len(ids) == 2, "node a accepted %d requests, want 2", len(ids))
			})
			third := make(chan error, 1)
			go func() { _, err := e.infer(client.Request{}); third <- err }()
			natsembed.Eventually(t, 3*time.Second, func() error {
				return natsembed.Check(e.svc.Stats().QueueLen == 1, "the third request is not queued: %+v", e.svc.Stats())
			})
			a.inFlight.Store(0) // the node finished both
			if tc.body == nil {
				for _, id := range ids {
					require.NoError(t, wire.PublishJSON(e.nc, subject.Default.Outcome("a"), completedOf("a", id)))
				}
			} else {
				require.NoError(t, e.nc.Publish(subject.Default.Outcome("a"), tc.body(ids)))
			}
			natsembed.Eventually(t, 3*time.Second, func() error {
				served, _ := a.order()
				st := e.svc.Stats()
				return natsembed.Check(len(served) == 3 && st.Outstanding == 1, "served %d (want 3), outstanding %d (want 1: the third)",
					len(served), st.Outstanding)
			})
		})
	}
}

func completedOf(node, id string) record.Outcome {
	return record.Outcome{Kind: record.OutcomeCompleted, NodeID: node, RequestID: id, OK: true, Time: time.Now()}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
