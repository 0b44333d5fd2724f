package wire

import (
	"encoding/base64"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults and bounds of a request's routing headers (DESIGN §3).
const (
	DefaultCostTolerance = 50
	DefaultTimeout       = 30 * time.Second
	// MaxTimeout bounds Fed-Timeout-Ms so a typo cannot pin a node for days.
	MaxTimeout = time.Hour
	// MaxRequestIDLen bounds Fed-Request-Id; it lands in subjects, logs and events.
	MaxRequestIDLen = 128
	// MaxTenantLen bounds Fed-Tenant; tenants are map keys in limits and stats.
	MaxTenantLen = 128
	// MaxSessionLen bounds Fed-Session.
	MaxSessionLen = 256
)

// Spec is what a request's headers ask of the router. The zero value is not
// the default: use ParseSpec on an empty header, or NewSpec.
type Spec struct {
	RequestID     string
	Tenant        string
	Model         string
	Privacy       Privacy
	Regions       []string // allow-list; nil means any region
	MaxLatencyMs  float64  // 0: no bound
	MinThroughput float64  // tokens/s; 0: no bound
	PreferGPU     bool
	CostTolerance int // 0 cheapest … 100 fastest
	Region        string
	Session       string
	Stream        bool
	Timeout       time.Duration // 0: the default
	// NoResume: a stream whose node is lost ends in 503 instead of
	// continuing on another node.
	NoResume bool
	// ContinueSeq > 0: a continuation of a lost stream from this Fed-Seq
	// (Fed-Continue-Seq); only nodes that can continue an answer take it.
	ContinueSeq int
}

// NewSpec returns a Spec with every default of DESIGN §3 filled in.
func NewSpec() Spec {
	return Spec{Privacy: DefaultPrivacy, PreferGPU: true, CostTolerance: DefaultCostTolerance}
}

// specHeader is one routing header: how it decodes into a Spec and how a
// Spec encodes it ("" when the field holds its default, so the header is
// left out). A new header is one entry here and nothing else.
type specHeader struct {
	name   string
	decode func(s *Spec, v string) (why string)
	encode func(s *Spec) string
}

var specHeaders = [...]specHeader{
	{HdrRequestID, func(s *Spec, v string) string {
		s.RequestID = v
		return maxLen(v, MaxRequestIDLen)
	}, func(s *Spec) string { return s.RequestID }},
	{HdrTenant, func(s *Spec, v string) string {
		s.Tenant = v
		return maxLen(v, MaxTenantLen)
	}, func(s *Spec) string { return s.Tenant }},
	{HdrModel, func(s *Spec, v string) string {
		s.Model = v
		return idWhy("model", v, "is not a valid model id: ")
	}, func(s *Spec) string { return s.Model }},
	{HdrPrivacy, func(s *Spec, v string) string {
		p, err := ParsePrivacy(strings.TrimSpace(v))
		if err != nil {
			return "is not public, internal, confidential or restricted"
		}
		s.Privacy = p
		return ""
	}, func(s *Spec) string { return ifNot(s.Privacy != DefaultPrivacy, s.Privacy.String()) }},
	{HdrRegions, decodeRegions, func(s *Spec) string { return strings.Join(s.Regions, ",") }},
	{HdrMaxLatencyMs, func(s *Spec, v string) string { return nonNegFloat(v, &s.MaxLatencyMs) },
		func(s *Spec) string { return formatPositive(s.MaxLatencyMs) }},
	{HdrMinThroughput, func(s *Spec, v string) string { return nonNegFloat(v, &s.MinThroughput) },
		func(s *Spec) string { return formatPositive(s.MinThroughput) }},
	{HdrPreferGPU, func(s *Spec, v string) string { return parseBool(v, &s.PreferGPU) },
		func(s *Spec) string { return ifNot(!s.PreferGPU, "false") }},
	{HdrCostTolerance, func(s *Spec, v string) string {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			return "is not a whole number from 0 to 100"
		}
		s.CostTolerance = n
		return ""
	}, func(s *Spec) string {
		return ifNot(s.CostTolerance != DefaultCostTolerance, strconv.Itoa(s.CostTolerance))
	}},
	{HdrRegion, func(s *Spec, v string) string {
		s.Region = v
		return idWhy("region", v, "is not a valid region: ")
	}, func(s *Spec) string { return s.Region }},
	{HdrSession, func(s *Spec, v string) string {
		s.Session = v
		return maxLen(v, MaxSessionLen)
	}, func(s *Spec) string { return s.Session }},
	{HdrStream, func(s *Spec, v string) string { return parseBool(v, &s.Stream) },
		func(s *Spec) string { return ifNot(s.Stream, "true") }},
	{HdrNoResume, func(s *Spec, v string) string { return parseBool(v, &s.NoResume) },
		func(s *Spec) string { return ifNot(s.NoResume, "true") }},
	{HdrContinueSeq, func(s *Spec, v string) string {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxContinueSeq {
			return "is not a whole number from 1 to " + strconv.Itoa(MaxContinueSeq)
		}
		s.ContinueSeq = n
		return ""
	}, func(s *Spec) string { return ifNot(s.ContinueSeq > 0, strconv.Itoa(s.ContinueSeq)) }},
	{HdrTimeoutMs, func(s *Spec, v string) string {
		n, err := strconv.ParseInt(v, 10, 64)
		// compare in milliseconds: n × 1e6 overflows a Duration for large n
		if err != nil || n <= 0 || n > MaxTimeout.Milliseconds() {
			return "is not a whole number of milliseconds from 1 to 3600000"
		}
		s.Timeout = time.Duration(n) * time.Millisecond
		return ""
	}, func(s *Spec) string {
		if s.Timeout <= 0 {
			return ""
		}
		return strconv.FormatInt(max(s.Timeout.Milliseconds(), 1), 10)
	}},
}

// MaxContinueSeq bounds Fed-Continue-Seq.
const MaxContinueSeq = 1 << 20

// ParseContinueText decodes Fed-Continue-Text (standard base64; may be
// empty for a continuation of chunks whose text the client did not keep).
func ParseContinueText(v string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, badHeader(HdrContinueText, v, "is not standard base64")
	}
	return b, nil
}

// ParseSpec decodes the routing headers of a request. Headers come from
// untrusted clients: any bad value is a 400 *Error naming the header; nothing
// panics and nothing is silently ignored.
func ParseSpec(h nats.Header) (Spec, error) {
	// The decoders are func values, so a Spec they write escapes to the
	// heap: decode into a pooled one and return a copy, keeping the
	// router's per-request path free of this allocation.
	sp := specPool.Get().(*Spec)
	defer specPool.Put(sp)
	*sp = NewSpec()
	for i := range specHeaders {
		sh := &specHeaders[i]
		v := h.Get(sh.name)
		if v == "" {
			continue
		}
		if why := sh.decode(sp, v); why != "" {
			return *sp, badHeader(sh.name, v, why)
		}
	}
	if sp.ContinueSeq > 0 && !sp.Stream {
		return *sp, Errorf(CodeBadRequest, "header %s: a continuation is of a stream: set %s: true", HdrContinueSeq, HdrStream)
	}
	return *sp, nil
}

var specPool = sync.Pool{New: func() any { return new(Spec) }}

// Encode sets in h the header of every field of s that differs from its
// default; ParseSpec(h) then gives s back. Clients (the SDK, the gateway)
// build their requests with it.
func (s *Spec) Encode(h nats.Header) {
	// One values slice for every header (headerValues), where h.Set
	// allocates one per header on every request.
	var vals [len(specHeaders)]string
	n := 0
	for i := range specHeaders {
		if vals[i] = specHeaders[i].encode(s); vals[i] != "" {
			n++
		}
	}
	b := headerValues{h: h, vals: make([]string, 0, n)}
	for i := range specHeaders {
		if vals[i] != "" {
			b.set(specHeaders[i].name, vals[i])
		}
	}
}

func badHeader(name, value, why string) *Error {
	if len(value) > 64 {
		value = value[:64] + "…"
	}
	return Errorf(CodeBadRequest, "header %s: %q %s", name, value, why)
}

func decodeRegions(s *Spec, v string) string {
	s.Regions = nil
	for _, r := range strings.Split(v, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if err := ValidateID("region", r); err != nil {
			return "has an invalid region: " + err.Error()
		}
		s.Regions = append(s.Regions, r)
	}
	if len(s.Regions) == 0 {
		return "names no region"
	}
	return ""
}

func maxLen(v string, n int) string {
	if len(v) > n {
		return "is longer than " + strconv.Itoa(n) + " bytes"
	}
	return ""
}

func idWhy(kind, v, prefix string) string {
	if err := ValidateID(kind, v); err != nil {
		return prefix + err.Error()
	}
	return ""
}

func nonNegFloat(v string, dst *float64) string {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return "is not a non-negative number"
	}
	*dst = f
	return ""
}

func parseBool(v string, dst *bool) string {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return "is not true or false"
	}
	*dst = b
	return ""
}

func formatPositive(f float64) string {
	return ifNot(f > 0, strconv.FormatFloat(f, 'f', -1, 64))
}

// ifNot returns v when cond holds, else "" (the header is left out).
func ifNot(cond bool, v string) string {
	if cond {
		return v
	}
	return ""
}

// RegionAllowed reports whether data of this request may go to region.
func (s *Spec) RegionAllowed(region string) bool {
	if s.Regions == nil {
		return true
	}
	for _, r := range s.Regions {
		if r == region {
			return true
		}
	}
	return false
}

// EffectiveTimeout is the request's deadline budget, the default when unset.
func (s *Spec) EffectiveTimeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}
