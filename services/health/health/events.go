package health

import (
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/nats-io/nats.go"
)

// Event handlers. They run in the subscriptions' callbacks and only touch
// memory under mu; KV writes happen in the writer, never here.

func (s *Service) onHeartbeat(m *nats.Msg) {
	hb, err := decodeHeartbeat(m.Subject, m.Data)
	if err != nil {
		s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(hb.NodeID, now)
	if hb.InstanceID != "" && n.instance != "" && hb.InstanceID != n.instance {
		// The agent restarted: what its previous process earned says
		// nothing about this one.
		s.log.Info().Str("node", n.id).Str("instance", hb.InstanceID).Msg("node restarted: state reset to unknown")
		n.state, n.consecOK, n.consecFail = record.StateUnknown, 0, 0
	}
	if hb.InstanceID != "" {
		n.instance = hb.InstanceID
	}
	n.lastAlive, n.lastReport, n.lastHeartbeat = now, now, now
	n.bump(eventTime(hb.Time, now))
	n.inFlight, n.queueDepth, n.hbMax = hb.InFlight, hb.QueueDepth, hb.MaxConcurrency
	n.gpu, n.tps, n.draining, n.activeStreams = hb.GPUUtilization, hb.ThroughputTPS, hb.Draining, hb.ActiveStreams
	s.checkStale(n, now)
	s.wakeIfUrgent(n)
}

func (s *Service) onOutcome(m *nats.Msg) {
	o, err := decodeOutcome(m.Subject, m.Data)
	if err != nil {
		s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(o.NodeID, now)
	n.lastReport = now
	at := eventTime(o.Time, now)
	n.bump(at)
	tenant := s.mesh.tenant(o.Tenant, s.cfg.LatencyWindow)
	slots := []*counters{&n.stats, &s.mesh.all}
	if tenant != nil {
		slots = append(slots, tenant)
	}
	for _, c := range slots {
		switch o.Kind {
		case record.OutcomeCompleted:
			c.addCompleted(&o)
		case record.OutcomeDispatchFailed:
			c.c.DispatchFailures++
		case record.OutcomeDuplicate:
			c.c.DuplicatesDropped++
		}
	}

	isRequest := o.Kind == record.OutcomeCompleted || o.Kind == record.OutcomeDispatchFailed
	if isRequest {
		n.lastOutcome = now
	}
	switch judge(&o, n.draining) {
	case success:
		s.onSuccess(n, time.Duration(o.LatencyMs*float64(time.Millisecond)))
		if isRequest {
			n.results.add(true)
			s.breakerSuccess(n)
		}
	case failure:
		s.onFailure(n)
		if isRequest {
			n.results.add(false)
			s.breakerFailure(n, at) // event time: every instance opens it at the same instant
		}
		s.log.Debug().Str("node", n.id).Str("request", o.RequestID).Str("kind", o.Kind).Int("code", o.Code).
			Int("consecutive_failures", n.consecFail).Msg("failure recorded")
	}
	s.wakeIfUrgent(n)
}

func (s *Service) onUnplaced(m *nats.Msg) {
	u, err := decodeUnplaced(m.Data)
	if err != nil {
		s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
		return
	}
	s.mu.Lock()
	s.mesh.addUnplaced(&u, s.cfg.LatencyWindow)
	s.mu.Unlock()
}

// bump moves the node's version (updated_at) forward to t.
func (n *node) bump(t time.Time) {
	if t.After(n.version) {
		n.version = t
	}
}

// wakeIfUrgent wakes the writer when the bucket lags on something routers
// act on at once. Runs under mu.
func (s *Service) wakeIfUrgent(n *node) {
	// Compared field by field: rendering the record would sort the latency
	// window on every event.
	kv := n.kvSeen
	if kv == nil || kv.State != n.effectiveState() || kv.Circuit != n.circuit || kv.Draining != n.draining ||
		!kv.CircuitOpenedAt.Equal(n.openedAt) {
		s.wake()
	}
}
