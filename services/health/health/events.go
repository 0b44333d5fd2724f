package health

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/nats-io/nats.go"
)

// Event handlers. They run in the subscriptions' callbacks and only touch
// memory under mu; KV writes happen in the writer, never here.

// onEvent returns the subscription callback of one event type: decode,
// then apply under mu. An event that does not decode changes nothing and
// is logged, rate-limited.
func onEvent[E any](s *Service, decode func(subj string, data []byte) (E, error), apply func(e *E, now time.Time)) nats.MsgHandler {
	return func(m *nats.Msg) {
		e, err := decode(m.Subject, m.Data)
		if err != nil {
			s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
			return
		}
		now := time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		apply(&e, now)
	}
}

// decodeUnplaced fits record.DecodeUnplaced to onEvent: the subject
// (fed.router.unplaced) names no node.
func decodeUnplaced(_ string, data []byte) (record.Unplaced, error) {
	return record.DecodeUnplaced(data)
}

// onOutcomes is onEvent for fed.outcome.*, where a node agent sends one
// outcome or a batch of them (record.DecodeOutcomes): each outcome is
// judged on its own, exactly as a single one (kinds: those its subject
// carries), and the good ones are applied in order under one lock.
func onOutcomes(s *Service, kinds ...string) nats.MsgHandler {
	return func(m *nats.Msg) {
		outs, err := record.DecodeOutcomes(m.Subject, m.Data)
		good := outs[:0]
		for i := range outs {
			if !slices.Contains(kinds, outs[i].Kind) {
				err = errors.Join(err, fmt.Errorf("outcome of kind %q on %s: that subject carries %v", outs[i].Kind, m.Subject, kinds))
				continue
			}
			good = append(good, outs[i])
		}
		if err != nil {
			s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
		}
		if len(good) == 0 {
			return
		}
		now := time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := range good {
			s.applyOutcome(&good[i], now)
		}
	}
}

// outcomeOf decodes outcomes of the kinds its subject carries (§9.2: node
// agents publish completed on fed.outcome.<node>, routers dispatch_failed
// on fed.router.failed.<node>, clients duplicate on
// fed.client.duplicate.<node>); any other kind there is dropped.
func outcomeOf(kinds ...string) func(string, []byte) (record.Outcome, error) {
	return func(subj string, data []byte) (record.Outcome, error) {
		o, err := record.DecodeOutcome(subj, data)
		if err == nil && !slices.Contains(kinds, o.Kind) {
			err = fmt.Errorf("outcome of kind %q on %s: that subject carries %v", o.Kind, subj, kinds)
		}
		return o, err
	}
}

// applyHeartbeat takes a heartbeat's load and sign of life. Runs under mu.
func (s *Service) applyHeartbeat(hb *record.Heartbeat, now time.Time) {
	n := s.node(hb.NodeID, now)
	if hb.InstanceID != "" && n.instance != "" && hb.InstanceID != n.instance {
		// The agent restarted: what its previous process earned says
		// nothing about this one.
		s.log.Info().Str(logging.KeyNode, n.id).Str(logging.KeyInstance, hb.InstanceID).Msg("node restarted: state reset to unknown")
		n.state, n.consecOK, n.consecFail = record.StateUnknown, 0, 0
		s.breakerRestart(n)
	}
	if hb.InstanceID != "" {
		n.instance = hb.InstanceID
	}
	n.lastAlive, n.lastReport, n.lastHeartbeat = now, now, now
	n.aliveUntil = time.Time{} // heartbeats flow: their stop, not an older probe, says it died
	n.bump(eventTime(hb.Time, now))
	n.inFlight, n.queueDepth, n.hbMax = hb.InFlight, hb.QueueDepth, hb.MaxConcurrency
	n.gpu, n.tps, n.draining, n.activeStreams = hb.GPUUtilization, hb.ThroughputTPS, hb.Draining, hb.ActiveStreams
	// throughput_tps is the agent's own decode-speed average, never derived
	// here from outcomes; server goes as soon as a heartbeat stops carrying it.
	n.server = hb.Server
	s.checkStale(n, now)
	s.wakeIfUrgent(n)
}

// applyOutcome counts an outcome in the stats and judges the node by it.
// Runs under mu.
func (s *Service) applyOutcome(o *record.Outcome, now time.Time) {
	n := s.node(o.NodeID, now)
	n.lastReport = now
	at := eventTime(o.Time, now)
	n.bump(at)
	s.countOutcome(n, o)
	n.models.add(o)
	s.judgeOutcome(n, o, now, at)
	s.wakeIfUrgent(n)
}

// countOutcome adds o to the node's, the mesh's and the tenant's counters.
func (s *Service) countOutcome(n *node, o *record.Outcome) {
	s.peer.gen++
	slots := []*counters{&n.stats, &s.mesh.all}
	if tenant := s.mesh.tenant(o.Tenant, s.cfg.LatencyWindow); tenant != nil {
		slots = append(slots, tenant)
	}
	for _, c := range slots {
		switch o.Kind {
		case record.OutcomeCompleted:
			c.addCompleted(o)
		case record.OutcomeDispatchFailed:
			c.c.DispatchFailures++
		case record.OutcomeDuplicate:
			c.c.DuplicatesDropped++
		}
	}
}

// judgeOutcome moves the node's state, and for real requests its circuit
// breaker and success rate, by the verdict on o. at is the event's time.
// An outcome about another agent instance than the latest heartbeat's (a
// router's ack timeout for a dispatch to the process that died, reported
// after its successor started) is counted but judges nothing, and so is a
// failure that comes while the node is silent (silentAt): the missed
// heartbeats already say it, and once it beats again (a frozen or cut-off
// agent back) it is judged by what it does then, not by the ack timeouts
// of its silence, which opened its circuit for reset_timeout and left it
// unhealthy until a probe.
func (s *Service) judgeOutcome(n *node, o *record.Outcome, now, at time.Time) {
	if o.InstanceID != "" && n.instance != "" && o.InstanceID != n.instance {
		s.log.Debug().Str(logging.KeyNode, n.id).Str(logging.KeyRequest, o.RequestID).Str(logging.KeyInstance, o.InstanceID).
			Msg("outcome about a previous agent instance: not judged")
		return
	}
	isRequest := o.Kind == record.OutcomeCompleted || o.Kind == record.OutcomeDispatchFailed
	if isRequest {
		n.lastOutcome = now
	}
	switch judge(o, n.draining) {
	case success:
		s.onSuccess(n, time.Duration(o.LatencyMs*float64(time.Millisecond)))
		if isRequest {
			n.results.add(true)
			s.breakerSuccess(n)
		}
	case failure:
		if s.silentAt(n, now) {
			s.log.Debug().Str(logging.KeyNode, n.id).Str(logging.KeyRequest, o.RequestID).Str("kind", o.Kind).
				Dur("silent_for", now.Sub(n.lastHeartbeat)).Msg("failure while the node is silent: not judged")
			return
		}
		s.onFailure(n)
		if isRequest {
			n.results.add(false)
			s.breakerFailure(n, at) // event time: every instance opens it at the same instant
		}
		s.log.Debug().Str(logging.KeyNode, n.id).Str(logging.KeyRequest, o.RequestID).Str("kind", o.Kind).Int("code", o.Code).
			Int("consecutive_failures", n.consecFail).Msg("failure recorded")
	}
}

// silentAt reports whether the node, which has heartbeated, has missed
// more than two heartbeat intervals at now (a heartbeat is due every
// interval; two leave room for a late one).
func (s *Service) silentAt(n *node, now time.Time) bool {
	return !n.lastHeartbeat.IsZero() && now.Sub(n.lastHeartbeat) > 2*s.cfg.HeartbeatInterval
}

// applyUnplaced counts a request no node took. Runs under mu.
func (s *Service) applyUnplaced(u *record.Unplaced, _ time.Time) {
	s.peer.gen++
	s.mesh.addUnplaced(u, s.cfg.LatencyWindow)
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
