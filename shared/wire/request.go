package wire

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults of a request's routing headers (DESIGN §3).
const (
	DefaultCostTolerance = 50
	DefaultTimeout       = 30 * time.Second
	// MaxTimeout bounds Fed-Timeout-Ms so a typo cannot pin a node for days.
	MaxTimeout = time.Hour
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
}

// NewSpec returns a Spec with every default of DESIGN §3 filled in.
func NewSpec() Spec {
	return Spec{Privacy: DefaultPrivacy, PreferGPU: true, CostTolerance: DefaultCostTolerance}
}

func badHeader(name, value, why string) *Error {
	return Errorf(CodeBadRequest, "header %s: %q %s", name, value, why)
}

// ParseSpec decodes the routing headers of a request. Headers come from
// untrusted clients: any bad value is a 400 *Error naming the header; nothing
// panics and nothing is silently ignored.
func ParseSpec(h nats.Header) (Spec, error) {
	s := NewSpec()
	s.RequestID = h.Get(HdrRequestID)
	if len(s.RequestID) > 256 {
		return s, badHeader(HdrRequestID, s.RequestID[:32]+"…", "is longer than 256 bytes")
	}
	s.Tenant = h.Get(HdrTenant)
	if s.Model = h.Get(HdrModel); s.Model != "" {
		if err := ValidateID("model", s.Model); err != nil {
			return s, badHeader(HdrModel, s.Model, "is not a valid model id: "+err.Error())
		}
	}
	if v := h.Get(HdrPrivacy); v != "" {
		p, err := ParsePrivacy(strings.TrimSpace(v))
		if err != nil {
			return s, badHeader(HdrPrivacy, v, "is not public, internal, confidential or restricted")
		}
		s.Privacy = p
	}
	if v := h.Get(HdrRegions); v != "" {
		for _, r := range strings.Split(v, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			if err := ValidateID("region", r); err != nil {
				return s, badHeader(HdrRegions, v, "has an invalid region: "+err.Error())
			}
			s.Regions = append(s.Regions, r)
		}
		if len(s.Regions) == 0 {
			return s, badHeader(HdrRegions, v, "names no region")
		}
	}
	var err error
	if s.MaxLatencyMs, err = nonNegFloat(h, HdrMaxLatencyMs); err != nil {
		return s, err
	}
	if s.MinThroughput, err = nonNegFloat(h, HdrMinThroughput); err != nil {
		return s, err
	}
	if v := h.Get(HdrPreferGPU); v != "" {
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			return s, badHeader(HdrPreferGPU, v, "is not true or false")
		}
		s.PreferGPU = b
	}
	if v := h.Get(HdrCostTolerance); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 0 || n > 100 {
			return s, badHeader(HdrCostTolerance, v, "is not a whole number from 0 to 100")
		}
		s.CostTolerance = n
	}
	if s.Region = h.Get(HdrRegion); s.Region != "" {
		if err := ValidateID("region", s.Region); err != nil {
			return s, badHeader(HdrRegion, s.Region, "is not a valid region: "+err.Error())
		}
	}
	s.Session = h.Get(HdrSession)
	if v := h.Get(HdrStream); v != "" {
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			return s, badHeader(HdrStream, v, "is not true or false")
		}
		s.Stream = b
	}
	if v := h.Get(HdrTimeoutMs); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n <= 0 || time.Duration(n)*time.Millisecond > MaxTimeout {
			return s, badHeader(HdrTimeoutMs, v, "is not a whole number of milliseconds from 1 to 3600000")
		}
		s.Timeout = time.Duration(n) * time.Millisecond
	}
	return s, nil
}

func nonNegFloat(h nats.Header, name string) (float64, error) {
	v := h.Get(name)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, badHeader(name, v, "is not a non-negative number")
	}
	return f, nil
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
