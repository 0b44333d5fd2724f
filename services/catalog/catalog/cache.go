package catalog

import (
	"sort"
	"sync"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/nats-io/nats.go/jetstream"
)

// cached is one fed_catalog record as the watch last delivered it.
type cached struct {
	node record.Node
	rev  uint64
}

// cache mirrors fed_catalog from a KV watch so queries never read KV and
// every replica answers from the same bucket.
type cache struct {
	mu    sync.RWMutex
	nodes map[string]cached
	// gone holds the last put revision of nodes this instance deleted, so a
	// watch entry still in flight cannot resurrect them.
	gone map[string]uint64
}

func newCache() *cache { return &cache{nodes: map[string]cached{}, gone: map[string]uint64{}} }

// put records this instance's own successful write at once, so a client that
// registers and then queries the same replica sees its node.
func (c *cache) put(n record.Node, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.nodes[n.NodeID]; ok && old.rev >= rev {
		return
	}
	delete(c.gone, n.NodeID)
	c.nodes[n.NodeID] = cached{node: n, rev: rev}
}

// remove records this instance's own delete of the record at revision rev.
func (c *cache) remove(id string, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.nodes[id]; ok && old.rev > rev {
		return
	}
	delete(c.nodes, id)
	c.gone[id] = rev
}

// apply folds one watch entry into the cache. A value that does not decode
// is left out (no query could use it) and returned as the error.
func (c *cache) apply(e jetstream.KeyValueEntry) error {
	id := buckets.NodeIDOfKey(e.Key())
	if id == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if buckets.Deleted(e) {
		delete(c.nodes, id)
		delete(c.gone, id)
		return nil
	}
	if g, ok := c.gone[id]; ok {
		if e.Revision() <= g {
			return nil
		}
		delete(c.gone, id)
	}
	n, err := record.DecodeNode(e.Key(), e.Value())
	if err != nil {
		delete(c.nodes, id)
		return err
	}
	c.nodes[id] = cached{node: n, rev: e.Revision()}
	return nil
}

// snapshot returns the records sorted by node id.
func (c *cache) snapshot() []cached {
	c.mu.RLock()
	out := make([]cached, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].node.NodeID < out[j].node.NodeID })
	return out
}
