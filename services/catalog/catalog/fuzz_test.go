package catalog

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// FuzzDecodeRegister: any body either decodes into a record that passes
// validation and survives a JSON round trip, or is refused with a 400.
func FuzzDecodeRegister(f *testing.F) {
	f.Add([]byte(`{"node_id":"n1","region":"eu","models":[{"model_id":"m","capabilities":["generate"]}],"max_concurrency":1}`))
	f.Add([]byte(`{"node_id":"n.1"}`))
	f.Add([]byte(`{`))
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := decodeRegister(data, subject.Default, now)
		if err != nil {
			if wire.CodeOf(err) != wire.CodeBadRequest {
				t.Fatalf("error %v has code %d, want 400", err, wire.CodeOf(err))
			}
			return
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("decoded node fails validation: %v", err)
		}
		if n.Subject != subject.Default.NodeInfer(n.NodeID) || !n.RegisteredAt.Equal(now) {
			t.Fatalf("subject/registered_at not filled: %+v", n)
		}
		b, err := json.Marshal(n)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back record.Node
		if err := json.Unmarshal(b, &back); err != nil || back.NodeID != n.NodeID || back.Clearance != n.Clearance {
			t.Fatalf("round trip: %v %+v", err, back)
		}
	})
}
