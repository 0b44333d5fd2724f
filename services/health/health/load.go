package health

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// loadHealth seeds memory from fed_health, so a restarted or additional
// instance keeps tripped circuits and failure streaks.
func (s *Service) loadHealth(ctx context.Context) error {
	w, err := s.health.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("health: watch %s: %w", buckets.Health, err)
	}
	defer func() { _ = w.Stop() }()
	now := time.Now()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("health: loading %s: %w", buckets.Health, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("health: loading %s: watcher closed", buckets.Health)
			}
			if e == nil {
				return nil // initial values done
			}
			s.seedFrom(e, now)
		}
	}
}

func (s *Service) seedFrom(e jetstream.KeyValueEntry, now time.Time) {
	id := buckets.NodeIDOfKey(e.Key())
	if wire.ValidateID("node_id", id) != nil {
		return
	}
	var r record.Health
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		s.log.Warn().Err(err).Str("key", e.Key()).Msg("undecodable fed_health record ignored")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(id, now)
	n.seed(&r, e.Revision())
	if r.State == record.StateUnhealthy && r.ConsecutiveFailures < s.cfg.UnhealthyAfter {
		// Unhealthy for silence: this instance judges heartbeats itself.
		n.state = record.StateUnknown
	}
}

// watchCatalog follows fed_catalog: registered nodes are tracked even
// before they report, deregistered ones become forgettable. It returns
// once the initial values are applied.
func (s *Service) watchCatalog(ctx, runCtx context.Context) error {
	w, err := s.catalog.WatchAll(runCtx)
	if err != nil {
		return fmt.Errorf("health: watch %s: %w", buckets.Catalog, err)
	}
	s.watcher = w
	loaded := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(loaded)
				}
				continue
			}
			s.applyCatalog(e)
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("health: loading %s: %w", buckets.Catalog, ctx.Err())
	}
}

func (s *Service) applyCatalog(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if wire.ValidateID("node_id", id) != nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		if n := s.nodes[id]; n != nil {
			n.registered = false
		}
		return
	}
	n := s.node(id, now)
	n.registered = true
	n.bump(e.Created())
	var rec record.Node
	if err := json.Unmarshal(e.Value(), &rec); err == nil && rec.MaxConcurrency > 0 {
		n.catalogMax = rec.MaxConcurrency
	}
}
