package router

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
)

// watch follows every key of kv (current values, then updates) and hands
// each change to apply. ready is closed once the initial values are applied.
// The watcher lives on the service's own context: Start's ctx only bounds
// start-up.
func (s *Service) watch(kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry), ready chan<- struct{}) error {
	w, err := kv.WatchAll(s.ctx)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				apply(e)
			}
		}
	}()
	return nil
}

func deleted(e jetstream.KeyValueEntry) bool {
	op := e.Operation()
	return op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge
}

// applyCatalog mirrors one fed_catalog change. A value that does not decode
// is logged and the node's previous record (if any) is kept.
func (s *Service) applyCatalog(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if id == "" {
		return
	}
	if deleted(e) {
		s.cache.deleteNode(id)
		s.log.Debug().Str("node", id).Msg("node left the catalog")
		return
	}
	var n record.Node
	if err := json.Unmarshal(e.Value(), &n); err != nil {
		s.log.Error().Err(err).Str("node", id).Msg("fed_catalog: undecodable node record ignored")
		return
	}
	if n.NodeID == "" {
		n.NodeID = id
	}
	if n.NodeID != id {
		s.log.Error().Str("node", id).Str("node_id", n.NodeID).Msg("fed_catalog: record's node_id differs from its key; ignored")
		return
	}
	s.cache.putNode(&n)
}

// applyHealth mirrors one fed_health change.
func (s *Service) applyHealth(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if id == "" {
		return
	}
	if deleted(e) {
		s.cache.putHealth(id, nil)
		return
	}
	var h record.Health
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		s.log.Error().Err(err).Str("node", id).Msg("fed_health: undecodable health record ignored")
		return
	}
	s.cache.putHealth(id, &h)
}

// applyConfig follows fed_config. An invalid value is logged and the last
// good one stays in force; a deleted key returns to the configured default.
func (s *Service) applyConfig(e jetstream.KeyValueEntry) {
	del := deleted(e)
	switch e.Key() {
	case record.ConfigKeyPolicy:
		p := s.cfg.Policy
		if !del {
			var err error
			if p, err = decodePolicy(s.cfg.Policy, e.Value()); err != nil {
				s.log.Error().Err(err).Uint64("revision", e.Revision()).Msg("fed_config router.policy rejected; keeping the last good policy")
				return
			}
		}
		s.policy.Store(newPolicyState(p))
		s.log.Info().Str("strategy", p.Strategy).Interface("weights", p.Weights).Float64("min_score", p.MinScore).
			Bool("default", del).Msg("router policy applied")
	case record.ConfigKeyRegions:
		var r record.Regions
		if !del {
			var err error
			if r, err = decodeRegions(e.Value()); err != nil {
				s.log.Error().Err(err).Msg("fed_config regions rejected; keeping the last good value")
				return
			}
		}
		s.cache.setRegions(r)
		s.log.Info().Int("regions", len(r)).Msg("regions applied")
	case record.ConfigKeyTenants:
		var t record.Tenants
		if !del {
			var err error
			if t, err = decodeTenants(e.Value()); err != nil {
				s.log.Error().Err(err).Msg("fed_config tenants rejected; keeping the last good value")
				return
			}
		}
		s.limits.configure(t)
		s.log.Info().Int("tenants", len(t)).Msg("tenant limits applied")
	}
}
