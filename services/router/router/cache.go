package router

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// capModel keys the index of nodes serving one model for one capability; a
// struct key costs no allocation to look up (a joined string would).
type capModel struct{ capability, model string }

// cache is the router's in-memory copy of fed_catalog and fed_health (and the
// regions config they are judged with). KV watchers write it; decisions read
// it under the read lock and never touch KV.
type cache struct {
	mu      sync.RWMutex
	entries map[string]*entry
	nextOrd int
	regions record.Regions
	// regionIDs interns region names so locality compares ints, not strings
	regionIDs map[string]int32

	// The index is rebuilt lazily: catalog changes only mark it dirty, so a
	// burst of 10,000 registrations costs one rebuild, at the next decision.
	dirty   bool
	byCap   map[string][]*entry
	byModel map[capModel][]*entry
	models  map[string]bool // every model id any node serves
	nodes   int             // entries with a catalog record

	// fleet is the median base TTFT over nodes with data (ms, float64
	// bits), refreshed by the sweep: the prior for nodes without data.
	fleet atomic.Uint64
}

func (c *cache) fleetTTFT() float64 { return math.Float64frombits(c.fleet.Load()) }

// refreshFleet recomputes the fleet's median TTFT (the router's 1 s sweep).
func (c *cache) refreshFleet() {
	c.mu.RLock()
	vals := make([]float64, 0, len(c.entries))
	for _, e := range c.entries {
		if b := e.anyTTFT(); b > 0 {
			vals = append(vals, b)
		}
	}
	c.mu.RUnlock()
	if len(vals) == 0 {
		c.fleet.Store(0)
		return
	}
	slices.Sort(vals)
	c.fleet.Store(math.Float64bits(vals[len(vals)/2]))
}

func newCache() *cache {
	return &cache{entries: map[string]*entry{}, regionIDs: map[string]int32{}, dirty: true}
}

func (c *cache) entryLocked(id string) *entry {
	e := c.entries[id]
	if e == nil {
		e = newEntry(id, c.nextOrd)
		c.nextOrd++
		e.setHealth(nil)
		c.entries[id] = e
	}
	return e
}

// putNode stores or replaces a node's catalog record; it returns the entry,
// how many requests the node can take now as this router sees it, and
// whether the record replaced one of another agent instance (the node
// restarted: what the old instance accepted is lost).
func (c *cache) putNode(n *record.Node) (e *entry, free int, restarted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e = c.entryLocked(n.NodeID)
	if e.node == nil {
		c.nodes++
	} else {
		restarted = e.node.InstanceID != "" && n.InstanceID != "" && e.node.InstanceID != n.InstanceID
	}
	e.node = n
	e.derive(c.regions, c.regionIDLocked(n.Region))
	c.dirty = true
	return e, e.free(), restarted
}

// deleteNode forgets a node's catalog record (deregistered or expired).
func (c *cache) deleteNode(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[id]
	if e == nil || e.node == nil {
		return
	}
	e.node = nil
	c.nodes--
	if !e.hasHealth {
		delete(c.entries, id)
	}
	c.dirty = true
}

// silentNode is a node found silent by the sweep, and how.
type silentNode struct {
	e   *entry
	how string
}

// silentWithRequests lists the nodes this router has accepted requests on
// whose health says unhealthy with no heartbeat for at least silence: the
// same judgement as Service.silentLoss, for nodes health does not write
// again.
func (c *cache) silentWithRequests(now time.Time, silence time.Duration) []silentNode {
	var out []silentNode
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.entries {
		if e.outstanding.Load() == 0 || !e.hasHealth || e.state != record.StateUnhealthy {
			continue
		}
		switch age := now.Sub(e.lastHeartbeat); {
		case e.lastHeartbeat.IsZero():
			out = append(out, silentNode{e, "silent: no heartbeat ever heard"})
		case age >= silence:
			out = append(out, silentNode{e, fmt.Sprintf("silent: no heartbeat for %s", age.Round(100*time.Millisecond))})
		}
	}
	return out
}

// putHealth updates a node's health in place: no rebuild, health changes at
// heartbeat pace for every node. It returns the entry and how many requests
// the node can take now as this router sees it (0 when it is not routable).
func (c *cache) putHealth(id string, h *record.Health) (*entry, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entryLocked(id)
	e.setHealth(h)
	if h == nil && e.node == nil {
		delete(c.entries, id)
	}
	if e.gate != rejNone || e.node == nil {
		return e, 0
	}
	return e, e.free()
}

// setRegions replaces the regions config; clearances and costs are re-derived.
func (c *cache) setRegions(r record.Regions) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regions = r
	for _, e := range c.entries {
		if e.node != nil {
			e.derive(r, c.regionIDLocked(e.node.Region))
		}
	}
}

func (c *cache) regionIDLocked(region string) int32 {
	id, ok := c.regionIDs[region]
	if !ok {
		id = int32(len(c.regionIDs))
		c.regionIDs[region] = id
	}
	return id
}

// callerRegionLocked is the region id locality compares against: -1 when
// the caller's region is unknown (neutral locality), -2 when no node is there.
func (c *cache) callerRegionLocked(region string) int32 {
	if region == "" {
		return -1
	}
	if id, ok := c.regionIDs[region]; ok {
		return id
	}
	return -2
}

// nodeCount is how many nodes the catalog cache holds.
func (c *cache) nodeCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes
}

// lookup returns the node entry by id, nil when unknown.
func (c *cache) lookup(id string) *entry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.entries[id]
}

// rlockIndexed takes the read lock with a fresh index, rebuilding it first
// when the catalog changed. The caller must RUnlock.
func (c *cache) rlockIndexed() {
	c.mu.RLock()
	if !c.dirty {
		return
	}
	c.mu.RUnlock()
	c.mu.Lock()
	if c.dirty {
		c.rebuildLocked()
	}
	c.mu.Unlock()
	c.mu.RLock()
}

func (c *cache) rebuildLocked() {
	byCap := map[string][]*entry{}
	byModel := map[capModel][]*entry{}
	models := map[string]bool{}
	for _, e := range c.entries {
		if e.node == nil {
			continue
		}
		seenCap := map[string]bool{}
		for _, m := range e.node.Models {
			models[m.ModelID] = true
			for _, cp := range m.Capabilities {
				k := capModel{cp, m.ModelID}
				if l := byModel[k]; len(l) == 0 || l[len(l)-1] != e {
					byModel[k] = append(l, e)
				}
				if !seenCap[cp] {
					seenCap[cp] = true
					byCap[cp] = append(byCap[cp], e)
				}
			}
		}
	}
	// Map order is random; a stable order keeps ties and explanations repeatable.
	for _, l := range byCap {
		sortByOrd(l)
	}
	for _, l := range byModel {
		sortByOrd(l)
	}
	c.byCap, c.byModel, c.models, c.dirty = byCap, byModel, models, false
}

// candidatesLocked returns the nodes serving capability (and model when
// given). Requires the read lock from rlockIndexed.
// candidateCount is how many nodes a decision for capability (and model)
// judges.
func (c *cache) candidateCount(capability, model string) int {
	c.rlockIndexed()
	defer c.mu.RUnlock()
	return len(c.candidatesLocked(capability, model))
}

func (c *cache) candidatesLocked(capability, model string) []*entry {
	if model == "" {
		return c.byCap[capability]
	}
	return c.byModel[capModel{capability, model}]
}

func sortByOrd(l []*entry) {
	sort.Slice(l, func(i, j int) bool { return l[i].ord < l[j].ord })
}
