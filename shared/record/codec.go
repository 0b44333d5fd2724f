package record

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/fedmesh/fedmesh/shared/wire"
)

// Every request ends in an outcome that its node encodes and health and
// every router decode, and in a decision its router encodes: encoding/json's
// reflection on them was 10 % of a routed request's CPU (README →
// Performance). The codec here handles the subset of JSON the mesh's own
// parts send (known keys, ASCII strings without escapes, plain numbers, UTC
// times) and hands anything else to encoding/json, so the bytes and the
// decoded values are exactly encoding/json's either way (FuzzDecodeOutcome,
// FuzzDecodeOutcomes and FuzzEncode compare the two).

// EncodeOutcomes is what a node agent publishes on fed.outcome.<node_id>:
// one outcome as a JSON object, more as a JSON array (DecodeOutcomes). The
// bytes are json.Marshal's.
func EncodeOutcomes(out []Outcome) ([]byte, error) {
	if len(out) == 1 {
		a := appender{b: make([]byte, 0, 256), ok: true}
		if a.outcome(&out[0]); a.ok {
			return a.b, nil
		}
		return json.Marshal(out[0])
	}
	a := appender{b: make([]byte, 0, 2+len(out)*256), ok: true}
	a.b = append(a.b, '[')
	for i := range out {
		if i > 0 {
			a.b = append(a.b, ',')
		}
		a.outcome(&out[i])
	}
	if !a.ok {
		return json.Marshal(out)
	}
	return append(a.b, ']'), nil
}

// EncodeDecisions is a router's batch of placements on
// fed.router.decisions (DESIGN §9.5), as json.Marshal writes it.
func EncodeDecisions(d *Decisions) ([]byte, error) {
	a := appender{b: make([]byte, 0, 64+len(d.Decisions)*256), ok: true}
	a.open()
	a.str("router", d.Router, false)
	a.key("decisions")
	if d.Decisions == nil {
		a.b = append(a.b, "null"...)
	} else {
		a.b = append(a.b, '[')
		for i := range d.Decisions {
			if i > 0 {
				a.b = append(a.b, ',')
			}
			a.decision(&d.Decisions[i])
		}
		a.b = append(a.b, ']')
	}
	a.b = append(a.b, '}')
	if !a.ok {
		return json.Marshal(d)
	}
	return a.b, nil
}

// appender writes a record's JSON as json.Marshal does, field by field in
// the struct's order with its omitempty rules; ok turns false when a value
// needs what only encoding/json does (escapes, exponents, a non-UTC time),
// and then the caller asks it instead.
type appender struct {
	b     []byte
	ok    bool
	first bool // no field written yet in the open object
}

func (a *appender) outcome(o *Outcome) {
	a.open()
	a.str("kind", o.Kind, false)
	a.str("node_id", o.NodeID, false)
	a.str("request_id", o.RequestID, true)
	a.flag("ok", o.OK, false)
	a.integer("code", o.Code, true)
	a.str("error", o.Error, true)
	a.str("capability", o.Capability, true)
	a.str("model", o.Model, true)
	a.str("tenant", o.Tenant, true)
	a.integer("attempt", o.Attempt, true)
	a.float("latency_ms", o.LatencyMs, true)
	a.float("ttft_ms", o.TTFTMs, true)
	a.integer("tokens", o.Tokens, true)
	a.flag("stream", o.Stream, true)
	a.str("fault", o.Fault, true)
	a.flag("silent", o.Silent, true)
	a.flag("at_once", o.AtOnce, true)
	a.str("instance_id", o.InstanceID, true)
	a.time("ts", o.Time)
	a.b = append(a.b, '}')
}

func (a *appender) decision(d *Decision) {
	a.open()
	a.str("request_id", d.RequestID, true)
	a.str("capability", d.Capability, true)
	a.str("model", d.Model, true)
	a.str("tenant", d.Tenant, true)
	a.str("node", d.Node, false)
	a.float("score", d.Score, false)
	a.str("decided_by", d.DecidedBy, true)
	a.str("strategy", d.Strategy, true)
	a.integer("attempts", d.Attempts, false)
	a.str("takeover", d.Takeover, true)
	a.float("queued_ms", d.QueuedMs, true)
	a.float("predicted_ttft_ms", d.PredictedTTFTMs, true)
	a.float("prefix_match", d.PrefixMatch, true)
	a.time("ts", d.Time)
	a.b = append(a.b, '}')
}

func (a *appender) open() {
	a.b = append(a.b, '{')
	a.first = true
}

// key writes a field's name (plain ASCII, as every name here is).
func (a *appender) key(k string) {
	if !a.first {
		a.b = append(a.b, ',')
	}
	a.first = false
	a.b = append(a.b, '"')
	a.b = append(a.b, k...)
	a.b = append(a.b, '"', ':')
}

func (a *appender) str(k, v string, omitEmpty bool) {
	if omitEmpty && v == "" {
		return
	}
	for i := 0; i < len(v); i++ {
		// printable ASCII but ", \, <, > and &, which encoding/json escapes
		if c := v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			a.ok = false
			return
		}
	}
	a.key(k)
	a.b = append(a.b, '"')
	a.b = append(a.b, v...)
	a.b = append(a.b, '"')
}

func (a *appender) integer(k string, v int, omitEmpty bool) {
	if omitEmpty && v == 0 {
		return
	}
	a.key(k)
	a.b = strconv.AppendInt(a.b, int64(v), 10)
}

func (a *appender) float(k string, v float64, omitEmpty bool) {
	if omitEmpty && v == 0 {
		return
	}
	if abs := math.Abs(v); math.IsNaN(v) || math.IsInf(v, 0) || (abs != 0 && (abs < 1e-6 || abs >= 1e21)) {
		a.ok = false // an error or the exponent form: encoding/json's
		return
	}
	a.key(k)
	a.b = strconv.AppendFloat(a.b, v, 'f', -1, 64)
}

func (a *appender) flag(k string, v, omitEmpty bool) {
	if omitEmpty && !v {
		return
	}
	a.key(k)
	a.b = strconv.AppendBool(a.b, v)
}

func (a *appender) time(k string, t time.Time) {
	if t.Location() != time.UTC || t.Year() < 0 || t.Year() > 9999 {
		a.ok = false
		return
	}
	a.key(k)
	a.b = append(a.b, '"')
	a.b = t.AppendFormat(a.b, time.RFC3339Nano)
	a.b = append(a.b, '"')
}

// parseOutcome decodes data, one outcome object, into o as json.Unmarshal
// would; false when data is anything the fast path does not take, and then
// the caller asks encoding/json, which also words the errors.
func parseOutcome(data []byte, o *Outcome) bool {
	p := outcomeParser{b: data}
	p.space()
	return p.object(o) && p.end()
}

// parseOutcomeBatch is parseOutcome for an array of at most
// MaxOutcomesBatch outcomes.
func parseOutcomeBatch(data []byte) ([]Outcome, bool) {
	p := outcomeParser{b: data}
	if !p.byte('[') {
		return nil, false
	}
	out := make([]Outcome, 0, OutcomesHint(data))
	if p.byte(']') {
		return out, p.end()
	}
	for {
		if len(out) == MaxOutcomesBatch {
			return nil, false // too large: encoding/json's path words the error
		}
		out = append(out, Outcome{})
		if !p.object(&out[len(out)-1]) {
			return nil, false
		}
		if p.byte(',') {
			continue
		}
		if p.byte(']') && p.end() {
			return out, true
		}
		return nil, false
	}
}

type outcomeParser struct {
	b []byte
	i int
}

func (p *outcomeParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c (after any whitespace, and the whitespace after it).
func (p *outcomeParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		p.space()
		return true
	}
	return false
}

func (p *outcomeParser) end() bool {
	p.space()
	return p.i == len(p.b)
}

// object decodes one outcome object into o; keys are matched exactly (an
// unknown key, which encoding/json would match case-insensitively or skip,
// is left to it), and a key given twice keeps its last value, as there.
func (p *outcomeParser) object(o *Outcome) bool {
	if !p.byte('{') {
		return false
	}
	if p.byte('}') {
		return true
	}
	for {
		key, ok := p.plain()
		if !ok || !p.byte(':') {
			return false
		}
		switch string(key) {
		case "kind":
			ok = p.str(&o.Kind, knownKinds)
		case "node_id":
			ok = p.str(&o.NodeID, nil)
		case "request_id":
			ok = p.str(&o.RequestID, nil)
		case "ok":
			ok = p.flag(&o.OK)
		case "code":
			ok = p.integer(&o.Code)
		case "error":
			ok = p.str(&o.Error, nil)
		case "capability":
			ok = p.str(&o.Capability, knownCapabilities)
		case "model":
			ok = p.str(&o.Model, nil)
		case "tenant":
			ok = p.str(&o.Tenant, nil)
		case "attempt":
			ok = p.integer(&o.Attempt)
		case "latency_ms":
			ok = p.float(&o.LatencyMs)
		case "ttft_ms":
			ok = p.float(&o.TTFTMs)
		case "tokens":
			ok = p.integer(&o.Tokens)
		case "stream":
			ok = p.flag(&o.Stream)
		case "fault":
			ok = p.str(&o.Fault, knownFaults)
		case "silent":
			ok = p.flag(&o.Silent)
		case "at_once":
			ok = p.flag(&o.AtOnce)
		case "instance_id":
			ok = p.str(&o.InstanceID, nil)
		case "ts":
			start := p.i
			if _, ok = p.plain(); ok {
				ok = o.Time.UnmarshalJSON(p.b[start:p.i]) == nil
			}
		default:
			return false
		}
		if !ok {
			return false
		}
		if p.byte(',') {
			continue
		}
		return p.byte('}')
	}
}

// plain reads a string of printable ASCII without escapes and returns its
// contents (a slice of the input).
func (p *outcomeParser) plain() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:j], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false // escapes, control bytes and UTF-8: encoding/json's
		}
	}
	return nil, false
}

// Kinds, faults and capabilities are a few constants each: a match shares
// the constant instead of allocating the string again.
var (
	knownKinds        = []string{OutcomeCompleted, OutcomeDispatchFailed, OutcomeDuplicate, OutcomeProbe}
	knownFaults       = []string{FaultNode, FaultClient}
	knownCapabilities = []string{wire.CapGenerate, wire.CapCode, wire.CapEmbed, wire.CapTranscribe, wire.CapSynthesize, wire.CapImagegen}
)

// str reads a string into dst; the value is one of known when it matches.
func (p *outcomeParser) str(dst *string, known []string) bool {
	v, ok := p.plain()
	if !ok {
		return false
	}
	for _, k := range known {
		if string(v) == k {
			*dst = k
			return true
		}
	}
	*dst = string(v)
	return true
}

func (p *outcomeParser) flag(dst *bool) bool {
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		*dst, p.i = true, p.i+4
	case len(rest) >= 5 && string(rest[:5]) == "false":
		*dst, p.i = false, p.i+5
	default:
		return false // null, or not a bool
	}
	return p.delimited()
}

// delimited: a literal or number ends where JSON lets a token end.
func (p *outcomeParser) delimited() bool {
	if p.i == len(p.b) {
		return true
	}
	switch p.b[p.i] {
	case ' ', '\t', '\n', '\r', ',', '}', ']':
		return true
	}
	return false
}

// number reads a JSON number and reports whether it is an integer literal
// (no fraction, no exponent).
func (p *outcomeParser) number() (lit []byte, integer, ok bool) {
	start, j := p.i, p.i
	digits := func() int {
		n := 0
		for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
			j, n = j+1, n+1
		}
		return n
	}
	if j < len(p.b) && p.b[j] == '-' {
		j++
	}
	first := j
	if n := digits(); n == 0 || (n > 1 && p.b[first] == '0') {
		return nil, false, false
	}
	integer = true
	if j < len(p.b) && p.b[j] == '.' {
		j++
		if digits() == 0 {
			return nil, false, false
		}
		integer = false
	}
	if j < len(p.b) && (p.b[j] == 'e' || p.b[j] == 'E') {
		j++
		if j < len(p.b) && (p.b[j] == '+' || p.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return nil, false, false
		}
		integer = false
	}
	p.i = j
	return p.b[start:j], integer, p.delimited()
}

func (p *outcomeParser) integer(dst *int) bool {
	lit, integer, ok := p.number()
	if !ok || !integer {
		return false // a fraction or exponent into an int: encoding/json's error
	}
	v, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
	if err != nil {
		return false
	}
	*dst = int(v)
	return true
}

func (p *outcomeParser) float(dst *float64) bool {
	lit, _, ok := p.number()
	if !ok {
		return false
	}
	v, err := strconv.ParseFloat(string(lit), 64)
	if err != nil {
		return false
	}
	*dst = v
	return true
}
