package record

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeOutcomes(t *testing.T) {
	ok := func(id string) string {
		return `{"kind":"completed","node_id":"n1","request_id":"` + id + `","ok":true,"latency_ms":12,"ts":"2026-12-01T00:00:00Z"}`
	}
	many := make([]string, MaxOutcomesBatch+1)
	for i := range many {
		many[i] = ok(fmt.Sprint(i))
	}
	cases := []struct {
		name    string
		data    string
		wantIDs []string // the outcomes that pass, in order
		wantErr string   // "" for none
	}{
		{"one outcome, as before", ok("a"), []string{"a"}, ""},
		{"one outcome after whitespace", " \n" + ok("a"), []string{"a"}, ""},
		{"a batch", "[" + ok("a") + "," + ok("b") + "," + ok("c") + "]", []string{"a", "b", "c"}, ""},
		{"a batch after whitespace", "\t[" + ok("a") + "]", []string{"a"}, ""},
		{"an empty batch", "[]", []string{}, ""},
		{"a bad outcome spoils only itself", "[" + ok("a") + `,{"kind":"completed","code":-7},` + ok("c") + "]",
			[]string{"a", "c"}, "outcome 1 of the batch"},
		{"another node's outcome in the batch", "[" + ok("a") + `,{"kind":"completed","node_id":"n2"}]`,
			[]string{"a"}, `outcome 1 of the batch`},
		{"an element of the wrong type spoils only itself", "[" + ok("a") + `,{"kind":"completed","tokens":"many"},7,` + ok("d") + "]",
			[]string{"a", "d"}, "outcome 2 of the batch"},
		{"unknown kind", "[" + `{"kind":"exploded"}` + "]", []string{}, `unknown kind "exploded"`},
		{"too large a batch", "[" + strings.Join(many, ",") + "]", nil, "more than 256"},
		{"not JSON", "garbage", nil, "outcome on fed.outcome.n1"},
		{"a broken batch", "[" + ok("a") + ",", nil, "outcome batch on fed.outcome.n1"},
		{"a single bad outcome", `{"kind":"completed","code":5}`, nil, "bad code"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeOutcomes("fed.outcome.n1", []byte(tc.data))
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
			}
			if tc.wantIDs == nil {
				assert.Empty(t, got)
				return
			}
			ids := []string{}
			for _, o := range got {
				assert.Equal(t, "n1", o.NodeID, "the node is the subject's")
				ids = append(ids, o.RequestID)
			}
			assert.Equal(t, tc.wantIDs, ids)
		})
	}
}

// A batch holds exactly the outcomes DecodeOutcome accepts one by one.
func TestDecodeOutcomesJudgesLikeDecodeOutcome(t *testing.T) {
	bodies := []string{
		`{"kind":"completed","ok":true,"latency_ms":2000,"ttft_ms":20,"tokens":5,"tenant":"t","attempt":2}`,
		`{"kind":"completed","latency_ms":1e308}`,
		`{"kind":"completed","ok":false,"code":500,"fault":"martian"}`,
		`{"kind":"probe","ok":true}`,
		`{"kind":"completed","tenant":"` + strings.Repeat("x", MaxTenantLen+1) + `"}`,
		`{"kind":"completed","attempt":-1}`,
		`{"kind":"completed","node_id":"n1","ok":false,"code":503,"fault":"node","silent":true}`,
	}
	var want []Outcome
	for _, b := range bodies {
		if o, err := DecodeOutcome("fed.outcome.n1", []byte(b)); err == nil {
			want = append(want, o)
		}
	}
	got, err := DecodeOutcomes("fed.outcome.n1", []byte("["+strings.Join(bodies, ",")+"]"))
	require.Error(t, err)
	assert.Equal(t, want, got)
}

func FuzzDecodeOutcomes(f *testing.F) {
	f.Add([]byte(`{"kind":"completed","node_id":"n1","ok":true,"latency_ms":12,"tokens":3}`))
	f.Add([]byte(`[{"kind":"completed","ok":true,"request_id":"a"},{"kind":"completed","ok":false,"code":503,"fault":"node"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsJSON(t, data)
		got, err := DecodeOutcomes("fed.outcome.n1", data)
		if parsed := ParseOutcomes(data); len(parsed) > MaxOutcomesBatch || len(got) > len(parsed) {
			t.Fatalf("ParseOutcomes found %d outcomes, DecodeOutcomes accepted %d", len(parsed), len(got))
		}
		if len(got) > MaxOutcomesBatch {
			t.Fatalf("%d outcomes from one message", len(got))
		}
		for _, o := range got {
			if o.NodeID != "n1" || !(o.LatencyMs >= 0 && o.LatencyMs <= MaxLatencyMs) || !(o.TTFTMs >= 0 && o.TTFTMs <= MaxLatencyMs) ||
				o.Tokens < 0 || o.Attempt < 0 || !validCode(o.Code) || len(o.Tenant) > MaxTenantLen {
				t.Fatalf("accepted bad outcome %+v", o)
			}
			if _, err := json.Marshal(o); err != nil {
				t.Fatalf("accepted outcome does not re-encode: %v", err)
			}
		}
		// a single outcome is judged exactly as DecodeOutcome judges it
		if !isArray(data) {
			one, oneErr := DecodeOutcome("fed.outcome.n1", data)
			if (oneErr == nil) != (err == nil) || (err == nil && (len(got) != 1 || got[0] != one)) {
				t.Fatalf("DecodeOutcomes (%v, %v) disagrees with DecodeOutcome (%+v, %v)", got, err, one, oneErr)
			}
		}
	})
}

// The hint sizes a batch's slice: the outcomes' count for what node agents
// send, and never more than the largest batch a reader takes, whatever the
// body holds.
func TestOutcomesHint(t *testing.T) {
	one := `{"kind":"completed","node_id":"n1","ok":true,"ts":"2026-12-04T00:00:00Z"}`
	batch := func(n int) string { return "[" + strings.TrimSuffix(strings.Repeat(one+",", n), ",") + "]" }
	for _, tc := range []struct {
		name string
		data string
		want int
	}{
		{"empty", "", 0},
		{"one outcome", one, 1},
		{"a batch of 32", batch(32), 32},
		{"larger than any batch read", batch(MaxOutcomesBatch + 10), MaxOutcomesBatch},
		{"a crafted body of keys only", strings.Repeat(`"kind"`, 10000), MaxOutcomesBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, OutcomesHint([]byte(tc.data)))
		})
	}
}

func TestIsArray(t *testing.T) {
	for in, want := range map[string]bool{"[]": true, " \n\t[1]": true, "{}": false, "": false, "  ": false, "x[": false} {
		assert.Equal(t, want, isArray([]byte(in)), "%q", in)
	}
}

// ParseOutcomes decodes as DecodeOutcomes does and judges nothing: a
// completion with a field out of range is still there for a router to end
// its dispatch.
func TestParseOutcomes(t *testing.T) {
	done := func(id string) string { return `{"kind":"completed","request_id":"` + id + `","ok":true}` }
	many := make([]string, MaxOutcomesBatch+1)
	for i := range many {
		many[i] = done(fmt.Sprint(i))
	}
	for _, tc := range []struct {
		name string
		data string
		want []string // request ids
	}{
		{"one", done("a"), []string{"a"}},
		{"out of range, judged by nobody here", `{"kind":"completed","request_id":"a","latency_ms":-5,"code":7,"node_id":"other"}`, []string{"a"}},
		{"a batch", "[" + done("a") + "," + done("b") + "]", []string{"a", "b"}},
		{"a field of the wrong type is left zero", `{"kind":"completed","request_id":"a","tokens":"many"}`, []string{"a"}},
		{"an element of the wrong type is left zero", "[" + done("a") + `,{"request_id":7},7,` + done("d") + "]", []string{"a", "", "", "d"}},
		{"an element that does not decode spoils only itself", "[" + done("a") + `,{"ts":"yesterday"},` + done("c") + "]", []string{"a", "c"}},
		{"an escaped one, through encoding/json", `{"kind":"completed","request_id":"\u0061"}`, []string{"a"}},
		{"too large a batch", "[" + strings.Join(many, ",") + "]", nil},
		{"not JSON", "garbage", nil},
		{"a broken batch", "[" + done("a") + ",", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			for _, o := range ParseOutcomes([]byte(tc.data)) {
				ids = append(ids, o.RequestID)
			}
			assert.Equal(t, tc.want, ids)
		})
	}
}
