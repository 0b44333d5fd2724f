package nodeagent

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend/synthetic"
	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// askStatus asks node whether it holds id, as a router whose ack was lost
// does, and returns the raw answer.
func (r *rig) askStatus(node string, body []byte) *nats.Msg {
	r.t.Helper()
	m, err := r.nc.Request(subject.Default.NodeStatus(node), body, 2*time.Second)
	require.NoError(r.t, err, "status on node %s: no answer", node)
	return m
}

func (r *rig) held(node, id string) bool {
	r.t.Helper()
	b, err := json.Marshal(api.StatusRequest{RequestID: id})
	require.NoError(r.t, err)
	m := r.askStatus(node, b)
	require.Zero(r.t, codeOf(m), m.Header.Get(wire.HdrServiceError))
	var sr api.StatusResponse
	require.NoError(r.t, json.Unmarshal(m.Data, &sr), "status answer %q", m.Data)
	return sr.Held
}

// A node holds a request it accepted while it runs and after its final
// (streamed or whole), and never one it does not know or that a targeted
// cancel withdrew.
func TestStatusHeld(t *testing.T) {
	r := newRig(t)
	g := newGate()
	r.agent(testConfig("n1", g))

	assert.False(t, r.held("n1", "never-seen"), "unknown request")

	running := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, running.status)
	g.waitStarted(t, 1)
	assert.True(t, r.held("n1", running.id), "accepted and running")

	withdrawn := r.dispatch("n1", "x", stream)
	require.Equal(t, wire.StatusAccepted, withdrawn.status)
	g.waitStarted(t, 1)
	cancel := nats.NewMsg(subject.Default.Cancel(withdrawn.id))
	cancel.Header.Set(wire.HdrNode, "n1")
	require.NoError(t, r.nc.PublishMsg(cancel))
	natsembed.Eventually(t, 3*time.Second, func() error {
		if r.held("n1", withdrawn.id) {
			return fmt.Errorf("withdrawn request %s still held", withdrawn.id)
		}
		return nil
	})

	close(g.release)
	assert.Equal(t, wire.StatusDone, running.read(t, 3*time.Second).final.Header.Get(wire.HdrStatus))
	assert.True(t, r.held("n1", running.id), "answered lately (stream)")
	assert.False(t, r.held("n1", withdrawn.id), "withdrawn, ended without a final")
}

func TestStatusHeldWholeAnswer(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 3})))
	whole := r.dispatch("n1", "x")
	require.Equal(t, wire.StatusAccepted, whole.status)
	whole.read(t, 2*time.Second)
	assert.True(t, r.held("n1", whole.id), "a whole answer sent lately is held")
	assert.False(t, r.held("n1", whole.id+"-other"))
}

func TestStatusRefusals(t *testing.T) {
	r := newRig(t)
	r.agent(testConfig("n1", synthetic.New(synthetic.Config{Tokens: 2})))
	long := strings.Repeat("x", wire.MaxRequestIDLen+1)
	for _, tc := range []struct {
		name, body, says string
	}{
		{"not json", `hello`, "status request"},
		{"empty", ``, "status request"},
		{"null", `null`, "request_id"},
		{"no id", `{}`, "request_id"},
		{"id not a string", `{"request_id":5}`, "request_id"},
		{"id too long", `{"request_id":"` + long + `"}`, "request_id"},
		{"unknown field", `{"request_id":"a","held":true}`, "held"},
		{"trailing data", `{"request_id":"a"} {}`, "after"},
		{"too long", `{"request_id":"a"}` + strings.Repeat(" ", maxStatusBody), "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := r.askStatus("n1", []byte(tc.body))
			assert.Equal(t, wire.CodeBadRequest, codeOf(ans), ans.Header.Get(wire.HdrServiceError))
			assert.Contains(t, ans.Header.Get(wire.HdrServiceError), tc.says)
			assert.Contains(t, ans.Header.Get(wire.HdrServiceError), "node n1")
		})
	}
}

// The ring forgets the oldest answered requests past answeredKeep, and
// every one after keep.
func TestAnsweredIDsBounds(t *testing.T) {
	a := newAnsweredIDs()
	now := time.Now()
	for i := range answeredKeep + 10 {
		a.add(fmt.Sprintf("r%d", i), now)
	}
	assert.Len(t, a.at, answeredKeep)
	assert.False(t, a.has("r0", now, time.Minute), "oldest evicted")
	assert.True(t, a.has(fmt.Sprintf("r%d", answeredKeep+9), now, time.Minute))
	assert.False(t, a.has(fmt.Sprintf("r%d", answeredKeep+9), now.Add(time.Minute), time.Minute), "expired")
}

// A remembered id is the ring's own copy: the id a dispatch carries is a
// slice of that dispatch's whole header block (nats.go), which the ring
// would otherwise keep alive for answeredKeep more requests.
func TestAnsweredIDsKeepNoHeaderBlock(t *testing.T) {
	a := newAnsweredIDs()
	hdr := strings.Repeat("x", 64<<10) + "r-1" // one string, as nats.go holds a header block
	block := weak.Make(unsafe.StringData(hdr))
	a.add(hdr[len(hdr)-3:], time.Now())
	hdr = ""
	runtime.GC()
	assert.Nil(t, block.Value(), "the header block is garbage once its message is")
	assert.True(t, a.has("r-1", time.Now(), time.Minute))
}
