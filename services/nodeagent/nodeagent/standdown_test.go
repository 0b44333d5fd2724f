package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// An agent whose node id another instance took over (it was frozen or cut
// off past takeover_silence, or a second agent runs with the same id: its
// record in fed_catalog names that instance)
// stands down: it leaves the node's subjects (dispatches and probes find
// no responder here, so with the holder up they all reach it), its
// heartbeats stop, and it registers again, which the catalog refuses while
// the other lives. Once the other has fallen silent it holds the id and serves again;
// stopped while stood down it deregisters nothing (the record is the
// other's).
func TestTakenOverInstanceStandsDown(t *testing.T) {
	cases := []struct {
		name     string
		takeOver func(t *testing.T, set *buckets.Set, self record.Node)
		takeBack bool // the other falls silent, then this one stops
	}{
		{"record replaced, the other falls silent", replaceRecord, true},
		{"record replaced, stopped while stood down", replaceRecord, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRigNoCatalog(t)
			set := natsembed.BucketsForTest(t, r.nc)
			cat := startFakeCatalog(t, r.nc, &fakeCatalog{kv: set.Catalog})
			hbs := make(chan *nats.Msg, 256)
			sub, err := r.nc.ChanSubscribe(subject.Default.Heartbeat("n1"), hbs)
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			require.NoError(t, r.nc.Flush())
			cfg := testConfig("n1", synthetic.New(synthetic.Config{}))
			logs, log := natsembed.NewLogBuffer(t)
			s, err := New(r.conn(), cfg, log)
			require.NoError(t, err)
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					_ = s.Stop()
				}
			})
			require.NoError(t, s.Start(context.Background()))
			require.Equal(t, wire.StatusAccepted, r.dispatch("n1", "x").status)
			regs := cat.regs()
			require.Len(t, regs, 1)

			cat.mu.Lock()
			cat.conflicts = cat.refused + 1<<30 // the other instance lives
			cat.mu.Unlock()
			tc.takeOver(t, set, regs[0])
			natsembed.Eventually(t, 5*time.Second, func() error {
				_, err := r.tryDispatch("n1", "x", 2*time.Second)
				return natsembed.Check(errors.Is(err, nats.ErrNoResponders), "still on the node's subjects: %v", err)
			})
			_, err = r.nc.Request(subject.Default.NodeProbe("n1"), nil, 2*time.Second)
			assert.ErrorIs(t, err, nats.ErrNoResponders, "probe")
			natsembed.Eventually(t, 5*time.Second, func() error {
				return natsembed.Check(cat.refusals() >= 2, "%d registrations refused", cat.refusals())
			})
			for len(hbs) > 0 { // any sent before it stood down
				<-hbs
			}
			time.Sleep(4 * cfg.HeartbeatInterval)
			assert.Empty(t, hbs, "a stood-down instance sends no heartbeat")
			assert.Equal(t, 1, strings.Count(logs.String(), "standing down"), "logged once: %s", logs.String())

			if !tc.takeBack {
				stopped = true
				require.NoError(t, s.Stop())
				assert.Empty(t, cat.deregs(), "the record is the other instance's")
				return
			}
			cat.mu.Lock()
			cat.conflicts = 0 // the other has been silent past takeover_silence
			cat.mu.Unlock()
			natsembed.Eventually(t, 5*time.Second, func() error {
				c, err := r.tryDispatch("n1", "x", 2*time.Second)
				return natsembed.Check(err == nil && c.status == wire.StatusAccepted, "not serving again: %v", err)
			})
			assert.Equal(t, "ok", probe(t, r.nc, "n1").Status, "probe")
			n, err := set.Catalog.Get(context.Background(), buckets.NodeKey("n1"))
			require.NoError(t, err)
			var rec record.Node
			require.NoError(t, json.Unmarshal(n.Value(), &rec))
			assert.Equal(t, s.InstanceID(), rec.InstanceID, "its own record again")
			select {
			case m := <-hbs:
				var hb record.Heartbeat
				require.NoError(t, json.Unmarshal(m.Data, &hb))
				assert.Equal(t, s.InstanceID(), hb.InstanceID)
			case <-time.After(2 * time.Second):
				t.Fatal("no heartbeat once it holds the id again")
			}
			assert.Contains(t, logs.String(), "node id held again: serving")
			assert.GreaterOrEqual(t, s.dispatched(), 2.0, "the dispatch count goes on across the stand-down")
			stopped = true
			require.NoError(t, s.Stop())
			require.Len(t, cat.deregs(), 1)
			assert.Equal(t, s.InstanceID(), cat.deregs()[0].InstanceID)
		})
	}
}

// replaceRecord writes the node's record as the catalog does when another
// instance takes the id over.
func replaceRecord(t *testing.T, set *buckets.Set, self record.Node) {
	other := self
	other.InstanceID = "successor"
	data, err := json.Marshal(other)
	require.NoError(t, err)
	_, err = set.Catalog.Put(context.Background(), buckets.NodeKey(self.NodeID), data)
	require.NoError(t, err)
}
