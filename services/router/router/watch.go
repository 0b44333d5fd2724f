package router

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
)

// follow loads and then follows the three buckets the router mirrors,
// config first, so the catalog is judged with the configured regions. Each
// watch lives on s.loops: ctx only bounds loading the current values.
func (s *Service) follow(ctx context.Context, set *buckets.Set) error {
	for _, w := range []struct {
		kv    jetstream.KeyValue
		apply func(jetstream.KeyValueEntry)
	}{{set.Config, s.applyConfig}, {set.Catalog, s.applyCatalog}, {set.Health, s.applyHealth}} {
		if err := buckets.Follow(ctx, s.loops, w.kv, s.lag.Wrap(w.apply)); err != nil {
			return err
		}
	}
	return nil
}

// applyCatalog mirrors one fed_catalog change. A value that does not decode
// or validate is logged and the node's previous record (if any) is kept.
func (s *Service) applyCatalog(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if id == "" {
		return
	}
	if buckets.Deleted(e) {
		en := s.cache.lookup(id)
		s.cache.deleteNode(id)
		s.log.Debug().Str(logging.KeyNode, id).Msg("node left the catalog")
		if en != nil {
			// a draining node finishes its requests before it deregisters:
			// requests still outstanding were lost with it
			s.nodeLost(en, "left the catalog")
		}
		return
	}
	n, err := record.DecodeNode(e.Key(), e.Value())
	if err != nil {
		s.log.Error().Err(err).Str(logging.KeyNode, id).Msg("fed_catalog: node record refused; keeping the previous one")
		return
	}
	en, free, restarted := s.cache.putNode(&n)
	s.wakeFor(en, free)
	if restarted {
		s.nodeLost(en, "restarted: another agent instance registered")
	}
}

// applyHealth mirrors one fed_health change. A value that does not decode
// or validate is logged and the node's previous health (if any) is kept.
func (s *Service) applyHealth(e jetstream.KeyValueEntry) {
	id := buckets.NodeIDOfKey(e.Key())
	if id == "" {
		return
	}
	if buckets.Deleted(e) {
		s.cache.putHealth(id, nil)
		return
	}
	h, err := record.DecodeHealth(e.Key(), e.Value())
	if err != nil {
		s.log.Error().Err(err).Str(logging.KeyNode, id).Msg("fed_health: health record refused; keeping the previous one")
		return
	}
	en, free := s.cache.putHealth(id, &h)
	s.wakeFor(en, free)
	if en.outstanding.Load() > 0 {
		if how, silent := s.silentLoss(&h, time.Now()); silent {
			s.nodeLost(en, how)
		}
	}
}

// applyConfig follows fed_config. An invalid value is logged and the last
// good one stays in force; a deleted key returns to the configured default.
func (s *Service) applyConfig(e jetstream.KeyValueEntry) {
	del := buckets.Deleted(e)
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
