package benchrouting

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
)

// Server is one simulated model server of the fleet and its node agent.
type Server struct {
	Profile simserver.Profile
	// MaxConcurrency is the node agent's max_concurrency: requests in
	// flight on the node (running and waiting in the server).
	MaxConcurrency int
}

// fleetDefaults are each profile's node agent settings: about what the
// server runs at once (its max_num_seqs, or a few more for the cpu).
var fleetDefaults = map[string]Server{
	"h100": {Profile: simserver.H100, MaxConcurrency: 64},
	"a10":  {Profile: simserver.A10, MaxConcurrency: 32},
	"cpu":  {Profile: simserver.CPU, MaxConcurrency: 8},
}

// DefaultCacheFraction is the share of each server's KV pool its prefix
// cache keeps of finished requests (simserver PrefixCacheBlocks). The
// shared_prefix workload is scaled down from a production run (hundreds
// of system prompts) to 64, and the caches by about as much: with their
// whole pools (an h100 holds 262 144 tokens) every server would keep every
// system prompt, every strategy would hit everywhere, and the run would
// say nothing about placement. Scaled, an h100 keeps 16 of the 64 system
// prompts, an a10 2, a cpu 1, and the fleet 56: the working set (64 ×
// 4 000 tokens) is larger than any one server's cache and about the
// fleet's, the regime prefix-aware routing is for.
const DefaultCacheFraction = 1.0 / 4

// cacheBlocks is the prefix cache a server keeps at fraction of its pool.
func cacheBlocks(p simserver.Profile, fraction float64) int {
	return max(1, min(p.KVBlocks, int(math.Round(float64(p.KVBlocks)*fraction))))
}

// DefaultFleet is 3 h100, 3 a10 and 2 cpu servers: fast, middling and slow
// in one fleet, as a mixed on-premises and cloud federation has.
const DefaultFleet = "3xh100,3xa10,2xcpu"

// ParseFleet reads "3xh100,3xa10,2xcpu" (a count is optional: "h100,a10").
func ParseFleet(s string) ([]Server, error) {
	var out []Server
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		n, name := 1, item
		if i := strings.IndexByte(item, 'x'); i > 0 {
			if c, err := strconv.Atoi(item[:i]); err == nil {
				n, name = c, item[i+1:]
			}
		}
		d, ok := fleetDefaults[strings.ToLower(name)]
		if !ok || n < 1 || n > 64 {
			return nil, fmt.Errorf("fleet %q: item %q: want [count x]profile, count 1–64, profile one of %s", s, item, simserver.ProfileNames())
		}
		for range n {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("fleet %q: no server", s)
	}
	return out, nil
}

// nodeIDs names each server's node: its profile and a number per profile.
func nodeIDs(fleet []Server) []string {
	seen := map[string]int{}
	out := make([]string, len(fleet))
	for i, s := range fleet {
		seen[s.Profile.Name]++
		out[i] = fmt.Sprintf("%s-%d", s.Profile.Name, seen[s.Profile.Name])
	}
	return out
}

// profileNames are the fleet's profile names, each once, in fleet order.
func profileNames(fleet []Server) []string {
	var out []string
	for _, s := range fleet {
		if !slices.Contains(out, s.Profile.Name) {
			out = append(out, s.Profile.Name)
		}
	}
	return out
}

// capacity is the requests per simulated second one server sustains when
// every prompt of prompt tokens is prefilled (no prefix-cache hit) and
// answered with out tokens: its engine's step is base + per-sequence ×
// batch + prefill tokens ÷ prefill rate (DESIGN §14), so each request costs
// its prefill, out × per-sequence, and its share of out steps' base at the
// largest batch the node's concurrency, the server's max_num_seqs and its
// KV pool allow.
func capacity(s Server, prompt, out float64) float64 {
	p := s.Profile
	kvTokens := float64(p.KVBlocks * p.BlockSize)
	batch := math.Max(1, math.Min(math.Min(float64(p.MaxNumSeqs), float64(s.MaxConcurrency)), math.Floor(kvTokens/(prompt+out))))
	cost := prompt/p.PrefillRate + out*p.DecodePerSeq.Seconds() + out*p.DecodeBase.Seconds()/batch
	return 1 / cost
}

// fleetCapacity is the fleet's capacity for w: the sum of its servers'.
func fleetCapacity(fleet []Server, w workload) float64 {
	var c float64
	for _, s := range fleet {
		c += capacity(s, w.meanPrompt(), float64(w.output()))
	}
	return c
}
