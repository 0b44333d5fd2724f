package health

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// seedFrom adopts one fed_health value at start, so a restarted or
// additional instance keeps tripped circuits and failure streaks.
func (s *Service) seedFrom(e jetstream.KeyValueEntry, now time.Time) {
	if buckets.NodeIDOfKey(e.Key()) == "" {
		return // stats.* keys (statsync.go), not a node's record
	}
	r, err := record.DecodeHealth(e.Key(), e.Value())
	if err != nil {
		s.badRecords.Warn().Err(err).Str("key", e.Key()).Msg("undecodable fed_health record ignored")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(r.NodeID, now)
	n.seed(&r, e.Revision())
	if r.State == record.StateUnhealthy && r.ConsecutiveFailures < s.cfg.UnhealthyAfter {
		// Unhealthy for silence: this instance judges heartbeats itself.
		n.state = record.StateUnknown
	}
}

// applyCatalog follows fed_catalog: registered nodes are tracked even
// before they report, deregistered ones become forgettable.
func (s *Service) applyCatalog(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if wire.ValidateID("node_id", id) != nil {
		return // not a node's key
	}
	if buckets.Deleted(e) {
		s.mu.Lock()
		if n := s.nodes[id]; n != nil {
			n.registered = false
		}
		s.mu.Unlock()
		return
	}
	// A value that does not decode still registers the node: the catalog,
	// its sole writer, lists it. Only its max_concurrency is unknown.
	rec, err := record.DecodeNode(e.Key(), e.Value())
	if err != nil {
		s.badRecords.Warn().Err(err).Str(logging.KeyNode, id).Msg("undecodable fed_catalog record: max_concurrency unknown")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(id, time.Now())
	n.registered = true
	n.bump(e.Created())
	if err == nil {
		n.catalogMax = rec.MaxConcurrency
	}
}
