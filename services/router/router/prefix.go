package router

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// The prefix index (DESIGN §6.7): which nodes recently received a request
// beginning with the same bytes, so a request goes where the model server's
// prefix cache most likely holds its prompt. Requests are cut into blocks of
// prefixBlockBytes; block i's hash covers blocks 0…i (chained), so equal
// hashes mean equal prefixes. The index maps a block hash to the few nodes
// most recently sent it, in two generations: when the current one is full
// it becomes the old one and the oldest is dropped, so memory is bounded and
// what was not used for a generation is forgotten (approximate LRU).
//
// Each router keeps its own, built from the placements it made: it costs no
// message on the hot path, and every router sees the same nodes' caches warm
// up from the traffic it sends them. Routers do not share it: the servers'
// own prefix-hit rates (fed_health server load) show how well it works. A
// node that leaves keeps its blocks until they age out: lookups compare
// entries, so a stale one never matches a candidate.

const (
	// prefixBlockBytes is the block size: about 32 tokens of text.
	prefixBlockBytes = 128
	// maxPrefixBlocks bounds the blocks hashed per request (the first
	// 32 KiB of the body): the hash cost stays in microseconds.
	maxPrefixBlocks = 256
	// prefixNodesPerBlock is how many nodes a block remembers.
	prefixNodesPerBlock = 4
	// DefaultPrefixIndexBlocks is the block count of one generation.
	DefaultPrefixIndexBlocks = 1 << 17
)

// rankCredit is how much of a match counts by the node's place among the
// block's most recent nodes: the server's cache is LRU, and a node that
// was sent the prefix before the latest one has had more of other prompts
// since. Without it every node that ever got a prefix looks as warm as the
// one that has it now and load alone decides between them: in make
// bench-routing's shared_prefix at 90 % each system prompt went to 2.9
// servers, every h100 was credited with 11–16 of the 16 while its cache
// holds 4, and the hit rate was 56–58 %.
var rankCredit = [prefixNodesPerBlock]float64{1, 0.5, 0.25, 0.125}

type blockNodes struct {
	nodes [prefixNodesPerBlock]*entry // most recent first
}

type prefixIndex struct {
	mu       sync.RWMutex
	cur, old map[uint64]blockNodes
	capacity int
}

func newPrefixIndex(capacity int) *prefixIndex {
	if capacity <= 0 {
		capacity = DefaultPrefixIndexBlocks
	}
	return &prefixIndex{cur: make(map[uint64]blockNodes), old: map[uint64]blockNodes{}, capacity: capacity}
}

// blockHashes appends the chained hashes of body's full blocks to dst.
func blockHashes(dst []uint64, body []byte) []uint64 {
	var prev uint64
	for i := 0; i+prefixBlockBytes <= len(body) && len(dst) < maxPrefixBlocks; i += prefixBlockBytes {
		h := xxhash.Sum64(body[i:i+prefixBlockBytes]) ^ (prev*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019)
		dst = append(dst, h)
		prev = h
	}
	return dst
}

// prefixMatch is one node's match: how many leading blocks it was sent,
// and its place among the last of them's nodes (0: the most recent).
type prefixMatch struct {
	e      *entry
	blocks int
	rank   int
}

// share is the match as a share of n blocks, its rank weighed in.
func (m *prefixMatch) share(n int) float64 {
	return float64(m.blocks) / float64(n) * rankCredit[m.rank]
}

// match fills out with the nodes that were sent a leading run of blocks,
// and how long; at most len(out) nodes (the longest runs win ties by
// recency). It returns the filled part of out.
func (x *prefixIndex) match(blocks []uint64, out []prefixMatch) []prefixMatch {
	out = out[:0]
	if len(blocks) == 0 {
		return out
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i, h := range blocks {
		bn, ok := x.cur[h]
		if !ok {
			if bn, ok = x.old[h]; !ok {
				break
			}
		}
		extended := false
		for rank, e := range bn.nodes {
			if e == nil {
				break
			}
			if i == 0 {
				if len(out) < cap(out) {
					out = append(out, prefixMatch{e: e, blocks: 1, rank: rank})
					extended = true
				}
				continue
			}
			for j := range out {
				if out[j].e == e && out[j].blocks == i {
					out[j].blocks++
					out[j].rank = rank
					extended = true
				}
			}
		}
		if !extended {
			break
		}
	}
	return out
}

// add records that e was sent a request with these blocks.
func (x *prefixIndex) add(e *entry, blocks []uint64) {
	if len(blocks) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, h := range blocks {
		bn, ok := x.cur[h]
		if !ok {
			bn = x.old[h]
		}
		bn = bn.push(e)
		if !ok && len(x.cur) >= x.capacity {
			x.old, x.cur = x.cur, make(map[uint64]blockNodes, x.capacity)
		}
		x.cur[h] = bn
	}
}

// push puts e first, keeping the others in order and dropping the oldest.
func (b blockNodes) push(e *entry) blockNodes {
	var out blockNodes
	out.nodes[0] = e
	n := 1
	for _, x := range b.nodes {
		if x != nil && x != e && n < prefixNodesPerBlock {
			out.nodes[n] = x
			n++
		}
	}
	return out
}

// size is the number of blocks held (both generations).
func (x *prefixIndex) size() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.cur) + len(x.old)
}
