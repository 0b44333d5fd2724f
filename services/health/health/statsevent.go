package health

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
)

// StatsEventEvery is the least time between two fed.health.stats events
// of one instance (DESIGN §9.6).
const StatsEventEvery = time.Second

// statsPub is the loop's memory of what it last published on
// fed.health.stats; only the loop goroutine touches it.
type statsPub struct {
	last []byte // the stats of the last event, encoded
	at   time.Time
}

// publishStats publishes this instance's fed.stats answer on
// fed.health.stats when it differs from the last one published and that
// one is at least StatsEventEvery old; force publishes it anyway (at
// start). Followers such as `fedmesh top` get every change within a
// second without asking, and nothing while the mesh is quiet.
func (s *Service) publishStats(p *statsPub, now time.Time, force bool) {
	if !force && now.Sub(p.at) < StatsEventEvery {
		return
	}
	s.mu.Lock()
	s.updateMeshState()
	st := s.stats()
	s.mu.Unlock()
	body, err := json.Marshal(st)
	if err != nil {
		s.pubFail.Warn().Err(err).Msg("encode fed.health.stats")
		return
	}
	if !force && bytes.Equal(body, p.last) {
		return
	}
	// record.StatsEvent, with the stats already encoded.
	ev, err := json.Marshal(struct {
		Health string          `json:"health"`
		TS     time.Time       `json:"ts"`
		Stats  json.RawMessage `json:"stats"`
	}{s.instance, now.UTC(), body})
	if err != nil {
		s.pubFail.Warn().Err(err).Msg("encode fed.health.stats")
		return
	}
	subj := s.cfg.Subjects.HealthStats()
	if err := s.nc.Publish(subj, ev); err != nil {
		// The next tick tries again: p.last is unchanged.
		s.pubFail.Warn().Err(err).Str(logging.KeySubject, subj).Int("bytes", len(ev)).Msg("publish stats event failed")
		return
	}
	p.last, p.at = body, now
}
