package simserver

import "container/list"

// block is one cached full block of prompt tokens, known by its chained
// hash.
type block struct {
	hash uint64
	refs int           // running requests that use it
	lru  *list.Element // in kvCache.lru while refs == 0
}

// kvCache is the KV block pool and the prefix cache in it, as vLLM keeps
// them: a running request holds its prompt's full blocks (shared with any
// other request with the same prefix) and private blocks for the rest of
// its prompt and its answer. When a request ends, its full prompt blocks
// stay cached, unreferenced, in LRU order; they are evicted (oldest
// first) when the pool needs the room or more than capacity are kept.
//
// Admission reserves a request's whole need up front (the simulator knows
// how long each answer will be), so nothing running is ever preempted.
type kvCache struct {
	total    int // blocks in the pool
	capacity int // unreferenced cached blocks kept at most
	blocks   map[uint64]*block
	lru      *list.List // unreferenced cached blocks, most recently released first
	held     int        // blocks referenced or reserved by running requests
	inUse    int        // cached blocks referenced by running requests
	// evictions counts cached blocks dropped.
	evictions uint64
}

func newKVCache(total, capacity int) *kvCache {
	return &kvCache{total: total, capacity: capacity, blocks: map[uint64]*block{}, lru: list.New()}
}

// lookup counts the leading blocks of hashes (at most limit) that are
// cached, and how many of those nobody references (taking them takes
// them out of the evictable pool).
func (c *kvCache) lookup(hashes []uint64, limit int) (hits, idle int) {
	for _, h := range hashes[:min(limit, len(hashes))] {
		b, ok := c.blocks[h]
		if !ok {
			break
		}
		hits++
		if b.refs == 0 {
			idle++
		}
	}
	return hits, idle
}

// admit takes the blocks a request needs: its full prompt blocks
// (hashes; the first hits are cache hits), plus private more. It reports
// false, changing nothing, when the pool cannot hold them even after
// evicting every unreferenced block.
func (c *kvCache) admit(hashes []uint64, hits, idle, private int) ([]*block, bool) {
	need := idle + (len(hashes) - hits) + private
	if c.held+need > c.total {
		return nil, false
	}
	refs := make([]*block, len(hashes))
	for i, h := range hashes {
		b, ok := c.blocks[h]
		if !ok {
			b = &block{hash: h}
			c.blocks[h] = b
		}
		c.ref(b)
		refs[i] = b
	}
	c.held += private
	c.evict()
	return refs, true
}

func (c *kvCache) ref(b *block) {
	if b.refs == 0 {
		if b.lru != nil {
			c.lru.Remove(b.lru)
			b.lru = nil
		}
		c.held++
		c.inUse++
	}
	b.refs++
}

// release gives back a request's blocks: private ones are freed, shared
// ones become evictable once unreferenced. The last block goes to the LRU
// end first, so a prompt's tail is evicted before its head (which more
// prompts share).
func (c *kvCache) release(refs []*block, private int) {
	c.held -= private
	for i := len(refs) - 1; i >= 0; i-- {
		b := refs[i]
		b.refs--
		if b.refs == 0 {
			c.held--
			c.inUse--
			b.lru = c.lru.PushFront(b)
		}
	}
	c.evict()
}

// evict drops the oldest unreferenced blocks while the pool is over-full
// or more than capacity are kept.
func (c *kvCache) evict() {
	for c.lru.Len() > 0 && (c.held+c.lru.Len() > c.total || c.lru.Len() > c.capacity) {
		b := c.lru.Remove(c.lru.Back()).(*block)
		b.lru = nil
		delete(c.blocks, b.hash)
		c.evictions++
	}
}

// cached is how many blocks the prefix cache knows (referenced or not).
func (c *kvCache) cached() int { return len(c.blocks) }
