package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSpecDefaults(t *testing.T) {
	s, err := ParseSpec(nats.Header{})
	require.NoError(t, err)
	assert.Equal(t, PrivacyInternal, s.Privacy)
	assert.True(t, s.PreferGPU)
	assert.Equal(t, DefaultCostTolerance, s.CostTolerance)
	assert.Nil(t, s.Regions)
	assert.Equal(t, DefaultTimeout, s.EffectiveTimeout())
	assert.True(t, s.RegionAllowed("anywhere"))
}

func TestParseSpecValues(t *testing.T) {
	h := nats.Header{}
	h.Set(HdrRequestID, "r1")
	h.Set(HdrTenant, "acme")
	h.Set(HdrModel, "llama-3")
	h.Set(HdrPrivacy, "confidential")
	h.Set(HdrRegions, "eu-west, eu-central")
	h.Set(HdrMaxLatencyMs, "250")
	h.Set(HdrMinThroughput, "12.5")
	h.Set(HdrPreferGPU, "false")
	h.Set(HdrCostTolerance, "90")
	h.Set(HdrRegion, "eu-west")
	h.Set(HdrSession, "s-1")
	h.Set(HdrStream, "true")
	h.Set(HdrTimeoutMs, "1500")
	h.Set(HdrContinueSeq, "7")
	s, err := ParseSpec(h)
	require.NoError(t, err)
	assert.Equal(t, Spec{RequestID: "r1", Tenant: "acme", Model: "llama-3", Privacy: PrivacyConfidential,
		Regions: []string{"eu-west", "eu-central"}, MaxLatencyMs: 250, MinThroughput: 12.5, PreferGPU: false,
		CostTolerance: 90, Region: "eu-west", Session: "s-1", Stream: true, Timeout: 1500 * time.Millisecond,
		ContinueSeq: 7}, s)
	assert.True(t, s.RegionAllowed("eu-central"))
	assert.False(t, s.RegionAllowed("us-west"))
}

func TestParseSpecRejects(t *testing.T) {
	cases := []struct{ header, value string }{
		{HdrPrivacy, "secret"},
		{HdrModel, "bad.model"},
		{HdrRegions, " , "},
		{HdrRegions, "eu west"},
		{HdrMaxLatencyMs, "-1"},
		{HdrMaxLatencyMs, "NaN"},
		{HdrMinThroughput, "fast"},
		{HdrPreferGPU, "maybe"},
		{HdrCostTolerance, "101"},
		{HdrCostTolerance, "1.5"},
		{HdrRegion, "us.west"},
		{HdrStream, "yes please"},
		{HdrTimeoutMs, "0"},
		{HdrTimeoutMs, "99999999999"},
		// the poison values: served with the default, a 1 ms
		// deadline, or a day; and a tenant that was served but never counted
		{HdrTimeoutMs, "9223372036854775807"},
		{HdrTimeoutMs, "288230376151711745"},
		{HdrTimeoutMs, "3600001"},
		{HdrTimeoutMs, "1e3"},
		{HdrTenant, strings.Repeat("t", MaxTenantLen+1)},
		{HdrRequestID, strings.Repeat("x", 300)},
		{HdrContinueSeq, "0"},
		{HdrContinueSeq, "-3"},
		{HdrContinueSeq, "9999999"},
		{HdrContinueSeq, "4"}, // without Fed-Stream: true
	}
	for _, c := range cases {
		t.Run(c.header+"="+c.value[:min(len(c.value), 12)], func(t *testing.T) {
			h := nats.Header{}
			h.Set(c.header, c.value)
			_, err := ParseSpec(h)
			require.Error(t, err)
			var we *Error
			require.True(t, errors.As(err, &we))
			assert.Equal(t, CodeBadRequest, we.Code)
			assert.Contains(t, we.Description, c.header, "the error names the header")
		})
	}
}

// FuzzParseSpec: headers come from untrusted clients; decoding must never
// panic, and an accepted spec must satisfy its own invariants.
func FuzzParseSpec(f *testing.F) {
	f.Add("confidential", "eu-west,us-east", "100", "5", "true", "50", "eu-west", "true", "1000")
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("restricted", ",,,", "1e309", "-0", "1", "100", "a-b_c", "0", "3600000")
	f.Fuzz(func(t *testing.T, privacy, regions, maxLat, minTP, gpu, cost, region, stream, timeout string) {
		h := nats.Header{}
		for k, v := range map[string]string{HdrPrivacy: privacy, HdrRegions: regions, HdrMaxLatencyMs: maxLat,
			HdrMinThroughput: minTP, HdrPreferGPU: gpu, HdrCostTolerance: cost, HdrRegion: region,
			HdrStream: stream, HdrTimeoutMs: timeout} {
			if v != "" {
				h.Set(k, v)
			}
		}
		s, err := ParseSpec(h)
		if err != nil {
			var we *Error
			if !errors.As(err, &we) || we.Code != CodeBadRequest {
				t.Fatalf("error is not a 400 *Error: %v", err)
			}
			return
		}
		if s.Privacy > PrivacyRestricted || s.CostTolerance < 0 || s.CostTolerance > 100 ||
			s.MaxLatencyMs < 0 || s.MinThroughput < 0 || s.Timeout < 0 || s.Timeout > MaxTimeout {
			t.Fatalf("accepted spec breaks an invariant: %+v", s)
		}
		for _, r := range s.Regions {
			if ValidateID("region", r) != nil {
				t.Fatalf("accepted invalid region %q", r)
			}
		}
	})
}

// FuzzSpecRoundTrip: whatever ParseSpec accepts, Encode writes back so that
// ParseSpec reads the same Spec (the SDK and gateway build headers with
// Encode, the router reads them with ParseSpec).
func FuzzSpecRoundTrip(f *testing.F) {
	f.Add("r-1", "acme", "llama-3", "confidential", "eu-west, eu-central", "250", "12.5", "false", "90", "eu-west", "s-1", "true", "1500", "true")
	f.Add("", "", "", "", "", "", "", "", "", "", "", "", "", "")
	f.Add("x", "t", "m", " public ", ",a,,b,", "0", "0.000001", "true", "50", "r", "", "false", "3600000", "0")
	f.Fuzz(func(t *testing.T, id, tenant, model, privacy, regions, maxLat, minTP, gpu, cost, region, session, stream, timeout, noResume string) {
		h := nats.Header{}
		for k, v := range map[string]string{HdrRequestID: id, HdrTenant: tenant, HdrModel: model, HdrPrivacy: privacy,
			HdrRegions: regions, HdrMaxLatencyMs: maxLat, HdrMinThroughput: minTP, HdrPreferGPU: gpu,
			HdrCostTolerance: cost, HdrRegion: region, HdrSession: session, HdrStream: stream, HdrTimeoutMs: timeout,
			HdrNoResume: noResume} {
			if v != "" {
				h.Set(k, v)
			}
		}
		s, err := ParseSpec(h)
		if err != nil {
			return
		}
		out := nats.Header{}
		s.Encode(out)
		back, err := ParseSpec(out)
		if err != nil {
			t.Fatalf("ParseSpec(Encode(%+v)) failed: %v (headers %v)", s, err, out)
		}
		if !reflect.DeepEqual(s, back) {
			t.Fatalf("round trip changed the spec:\n in  %+v\n out %+v\n headers %v", s, back, out)
		}
	})
}

func TestSpecEncodeOmitsDefaults(t *testing.T) {
	h := nats.Header{}
	s := NewSpec()
	s.Encode(h)
	assert.Empty(t, h, "a default spec needs no headers")
	s.CostTolerance, s.PreferGPU, s.Regions = 0, false, []string{"a", "b"}
	s.Encode(h)
	assert.Equal(t, "0", h.Get(HdrCostTolerance))
	assert.Equal(t, "false", h.Get(HdrPreferGPU))
	assert.Equal(t, "a,b", h.Get(HdrRegions))
}

// BenchmarkParseSpec: every request is parsed by the router and again by
// the node; it should stay allocation-free for headers without Fed-Regions.
func BenchmarkParseSpec(b *testing.B) {
	h := nats.Header{}
	h.Set(HdrRequestID, "abc")
	h.Set(HdrTenant, "t1")
	h.Set(HdrPrivacy, "confidential")
	h.Set(HdrTimeoutMs, "30000")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSpec(h); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParseContinueText(t *testing.T) {
	b, err := ParseContinueText("aGVsbG8gd29ybGQ=")
	require.NoError(t, err)
	assert.Equal(t, "hello world", string(b))
	_, err = ParseContinueText("not base64!")
	var we *Error
	require.True(t, errors.As(err, &we))
	assert.Equal(t, CodeBadRequest, we.Code)
	assert.Contains(t, we.Description, HdrContinueText)
}
