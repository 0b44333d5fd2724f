package wire

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateID(t *testing.T) {
	for _, c := range []struct {
		id string
		ok bool
	}{
		{"gpu-box_1", true}, {"A", true}, {"", false}, {"a.b", false}, {"a b", false}, {"a*", false},
		{"a>", false}, {strings.Repeat("x", MaxIDLen), true}, {strings.Repeat("x", MaxIDLen+1), false}, {"ü", false},
	} {
		err := ValidateID("node_id", c.id)
		if c.ok {
			assert.NoError(t, err, c.id)
		} else {
			require.Error(t, err, c.id)
			assert.Contains(t, err.Error(), "node_id")
		}
	}
}

func TestValidateCapability(t *testing.T) {
	for _, c := range BuiltinCapabilities {
		assert.NoError(t, ValidateCapability(c))
	}
	assert.NoError(t, ValidateCapability("custom.ocr"))
	for _, bad := range []string{"", "chat", "custom.", "custom.a.b", "custom.a b", "GENERATE"} {
		assert.Error(t, ValidateCapability(bad), bad)
	}
}

func TestPrivacyOrderAndJSON(t *testing.T) {
	assert.True(t, PrivacyRestricted.Allows(PrivacyConfidential))
	assert.True(t, PrivacyInternal.Allows(PrivacyInternal))
	assert.False(t, PrivacyInternal.Allows(PrivacyConfidential))
	b, err := json.Marshal(struct{ P Privacy }{PrivacyConfidential})
	require.NoError(t, err)
	assert.JSONEq(t, `{"P":"confidential"}`, string(b))
	var v struct{ P Privacy }
	require.Error(t, json.Unmarshal([]byte(`{"P":"top-secret"}`), &v))
	require.NoError(t, json.Unmarshal([]byte(`{"P":"public"}`), &v))
	assert.Equal(t, PrivacyPublic, v.P)
}

func TestReplyMessages(t *testing.T) {
	r := Reply{Inbox: "_INBOX.x.1", RequestID: "req", Node: "n1"}
	c := r.Chunk([]byte("a"))
	d := r.Done(nil, DoneInfo{Tokens: 1, LatencyMs: 2.5, RouteScore: "0.7"})
	assert.Equal(t, "0", c.Header.Get(HdrSeq))
	assert.Equal(t, "1", d.Header.Get(HdrSeq))
	assert.Equal(t, StatusDone, d.Header.Get(HdrStatus))
	assert.Empty(t, d.Data, "a stream ends in the empty ADR-47 sentinel")
	assert.True(t, IsFinal(d))
	assert.False(t, IsFinal(c))
	f := (&Reply{Inbox: "i", RequestID: "req"}).Fail(CodeNoCapacity, "no node")
	e := ErrorFromHeader(f.Header)
	require.NotNil(t, e)
	assert.Equal(t, &Error{Code: 503, Description: "no node", RequestID: "req"}, e)
	assert.True(t, IsFinal(f))
	assert.Nil(t, ErrorFromHeader(c.Header))
	bad := nats.Header{}
	bad.Set(HdrStatus, StatusError)
	bad.Set(HdrServiceErrorCode, "banana")
	assert.Equal(t, CodeInternal, ErrorFromHeader(bad).Code)
}

func TestLostList(t *testing.T) {
	cases := []struct {
		list, add, want string
	}{
		{"", "a", "a"},
		{"a", "b", "a,b"},
		{"a,b,c,d,e,f,g,h", "i", "b,c,d,e,f,g,h,i"},
	}
	for _, c := range cases {
		got := AddLost(c.list, c.add)
		if got != c.want {
			t.Errorf("AddLost(%q, %q) = %q, want %q", c.list, c.add, got, c.want)
		}
		if !NamesLost(got, c.add) {
			t.Errorf("NamesLost(%q, %q) = false", got, c.add)
		}
	}
	if NamesLost("ab,c", "a") || NamesLost("", "a") || !NamesLost("x,ab", "ab") {
		t.Error("NamesLost matches parts of ids or misses whole ones")
	}
	var seen []string
	LostList("a,,b", func(n string) { seen = append(seen, n) })
	if len(seen) != 2 || seen[0] != "a" || seen[1] != "b" {
		t.Errorf("LostList = %v", seen)
	}
}
