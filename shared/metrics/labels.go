package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Other is the label value of anything a LabelSet does not know.
const Other = "other"

// ErrorOther is the error_type of a code outside 100–999 (the
// convention's _OTHER).
const ErrorOther = "_OTHER"

// DefaultMaxValues bounds a LabelSet made with max 0.
const DefaultMaxValues = 1000

// LabelSet bounds a label to the values the mesh knows: model ids some node
// registered, tenants fed_config names. Anything else reads as Other, so a
// caller-chosen string never becomes a label value (each would be a new
// series for as long as the process lives). Reads take no lock; the zero
// value is not usable: make one with NewLabelSet.
type LabelSet struct {
	max int

	mu    sync.Mutex // serialises writers
	known atomic.Pointer[map[string]struct{}]
}

// NewLabelSet returns an empty set that keeps at most max values (0:
// DefaultMaxValues) and knows initial.
func NewLabelSet(max int, initial ...string) *LabelSet {
	if max <= 0 {
		max = DefaultMaxValues
	}
	l := &LabelSet{max: max}
	l.Replace(initial...)
	return l
}

// Replace makes values (the first max non-empty ones) the known set.
func (l *LabelSet) Replace(values ...string) {
	m := make(map[string]struct{}, min(len(values), l.max))
	for _, v := range values {
		if len(m) >= l.max {
			break
		}
		if v != "" {
			m[v] = struct{}{}
		}
	}
	l.mu.Lock()
	l.known.Store(&m)
	l.mu.Unlock()
}

// Add makes v known, unless the set is full; it reports whether v is known
// now. Copy on write: adding is rare, reading is every request.
func (l *LabelSet) Add(v string) bool {
	if v == "" {
		return false
	}
	if l.Known(v) {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := *l.known.Load()
	if _, ok := old[v]; ok {
		return true
	}
	if len(old) >= l.max {
		return false
	}
	m := make(map[string]struct{}, len(old)+1)
	for k := range old {
		m[k] = struct{}{}
	}
	m[v] = struct{}{}
	l.known.Store(&m)
	return true
}

// Known reports whether v is in the set.
func (l *LabelSet) Known(v string) bool {
	_, ok := (*l.known.Load())[v]
	return ok
}

// Value is the label value of v: v when known, "" for "" (the label is then
// absent, as Prometheus reads an empty value), else Other.
func (l *LabelSet) Value(v string) string {
	switch {
	case v == "":
		return ""
	case l.Known(v):
		return v
	default:
		return Other
	}
}

// Len is how many values are known.
func (l *LabelSet) Len() int { return len(*l.known.Load()) }

// ErrorType is the error_type label of a failed request: its wire code
// ("503", "504", "499"), "" for success (code 0), ErrorOther for a code no
// wire message can carry.
func ErrorType(code int) string {
	switch {
	case code == 0:
		return ""
	case code >= 100 && code <= 999:
		return strconv.Itoa(code)
	default:
		return ErrorOther
	}
}

// Operation is the gen_ai_operation_name of a capability: a built-in one
// (generate, code, embed, …) as it is, anything else (custom.<name>, which
// callers may spell as they like) Other.
func Operation(capability string) string {
	if capability == "" {
		return ""
	}
	for _, c := range wire.BuiltinCapabilities {
		if c == capability {
			return c
		}
	}
	return Other
}
