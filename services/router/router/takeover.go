package router

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// A lost node's requests (DESIGN §4, node loss). The router that placed a
// request keeps it in its outstanding entry (held) from the accept until the
// node's completed outcome, and only that router acts when the node is lost:
//
//   - its fed_health record turns unhealthy with last_heartbeat at least
//     Config.LostSilence old (health's verdict on silence, not on failures);
//   - its fed_catalog record is deleted while this router holds accepted
//     requests for it (a draining node finishes its requests first, so a
//     delete with requests outstanding is a loss too);
//   - its fed_catalog record is replaced by another agent instance (the
//     node restarted: the new instance knows nothing of the old one's work).
//
// The KV watch only flags the node (nodeLost); the work runs on the request
// group. After lostGrace (completion outcomes sent just before the loss
// travel another path than the KV watch) every request the node accepted
// before the signal is taken out of outstanding and, for each: a targeted
// cancel withdraws it from the lost node (should it only have been hung), a
// dispatch_failed outcome (503, "node lost", fault node; one per loss) tells health, and
// the request is placed again through place, exactly as a fresh one but
// without the nodes already tried and the lost one, with Fed-Takeover naming
// the lost node. A stream goes only to a resumable node, and only when the
// lost node was resumable and the client did not set Fed-No-Resume.
// Otherwise the client gets one final 503 with Fed-Lost-Node.

// lostGrace is how long the router waits after a loss signal before taking
// the node's requests: a completed outcome published just before the node
// went away (a drain's last request, then its deregister) may still be on
// its way, and a finished request must not run twice.
const lostGrace = 200 * time.Millisecond

// silentLoss reports whether a health record says the node went silent, and
// how, for the log and the final error. Only called when the router holds
// requests on the node.
func (s *Service) silentLoss(h *record.Health, now time.Time) (string, bool) {
	if h.State != record.StateUnhealthy {
		return "", false
	}
	if h.LastHeartbeat.IsZero() {
		return "silent: no heartbeat ever heard", true
	}
	age := now.Sub(h.LastHeartbeat)
	if age < s.cfg.LostSilence {
		return "", false // unhealthy for its failures: it still heartbeats
	}
	return fmt.Sprintf("silent: no heartbeat for %s", age.Round(100*time.Millisecond)), true
}

// nodeLost starts saving the requests this router placed on e, which was
// lost (how says why). It runs on a KV watch goroutine: it only checks a
// counter and hands the work to the request group.
func (s *Service) nodeLost(e *entry, how string) {
	if e.outstanding.Load() == 0 || !e.losing.CompareAndSwap(false, true) {
		return
	}
	since := time.Now()
	if s.requests.Go(func(ctx context.Context) {
		defer e.losing.Store(false)
		s.saveLost(ctx, e.id, how, since)
	}) {
		return
	}
	// stopping: nothing is placed any more, but nobody waits on silence
	defer e.losing.Store(false)
	for i, r := range s.out.takeLost(e.id, since) {
		s.lostOne(r, how, false, i == 0)
	}
}

// saveLost takes over every request node accepted before since.
func (s *Service) saveLost(ctx context.Context, node, how string, since time.Time) {
	t := time.NewTimer(lostGrace)
	select {
	case <-t.C:
	case <-ctx.Done(): // stopping: answer them at once
	}
	t.Stop()
	lost := s.out.takeLost(node, since)
	if len(lost) == 0 {
		return
	}
	s.log.Warn().Str(logging.KeyNode, node).Str("why", how).Int("requests", len(lost)).
		Msg("node lost with requests it had accepted: taking them over")
	for i, r := range lost {
		s.lostOne(r, how, true, i == 0)
	}
}

// lostOne withdraws one request from its lost node, reports the loss to
// health (report: once per loss, so one death counts as one failure and a
// restarted node does not find its circuit open) and re-places the request
// (place false: ends it with the lost final at once).
func (s *Service) lostOne(r lostRec, how string, place, report bool) {
	h := r.held
	if h == nil {
		return
	}
	s.withdraw(r.requestID, h.msg.Header.Get(wire.HdrCancelKey), r.e.id)
	if report {
		s.publishNodeFailed(&h.spec, h.capability, r.e.id, h.instance, h.model, h.attempts, "node lost")
	}
	p := h.placement(s, r.e)
	p.how = how
	if !place || !s.active.begin(p) {
		p.lost(how, "the router is stopping")
		return
	}
	p.takeOver()
}

// placement rebuilds the placement of a held request for a takeover from
// lost: the same request, deadline and attempt count, with the nodes tried
// before and the lost one excluded.
func (h *held) placement(s *Service, lost *entry) *placement {
	p := &placement{s: s, msg: h.msg, spec: h.spec, deadline: h.deadline, attempts: h.attempts, trace: context.Background(),
		// a request lost before (h.takeover) names every lost node: its
		// client may still keep the first (DESIGN §3.3)
		takeover: wire.AddLost(h.takeover, lost.id),
		inbound:  Inbound{ID: h.spec.RequestID, Capability: h.capability, Spec: h.spec, Header: h.msg.Header, Received: h.received}}
	p.query = newPlacementQuery(h.capability, &p.spec, s.cfg.Region)
	p.query.tried = append(append(make([]*entry, 0, len(h.tried)+1), h.tried...), lost)
	p.query.resumableOnly = h.spec.Stream
	p.lostResumable = h.resumable
	p.tm.idx = -1
	return p
}

// lostNode is the node whose loss this placement answers (the last of
// the lost list).
func (p *placement) lostNode() string {
	if i := strings.LastIndexByte(p.takeover, ','); i >= 0 {
		return p.takeover[i+1:]
	}
	return p.takeover
}

// takeOver places a lost node's request again, through the same decisions
// and dispatches as a fresh request; every dispatch carries Fed-Takeover.
// It runs on the caller's goroutine until the placement waits.
func (p *placement) takeOver() {
	switch {
	case p.spec.Stream && p.spec.NoResume:
		p.lost(p.how, "the client set Fed-No-Resume: its stream is not resumed on another node")
		return
	case p.spec.Stream && !p.lostResumable:
		p.lost(p.how, "it is not resumable: its stream cannot continue on another node")
		return
	case !time.Now().Before(p.deadline):
		p.lost(p.how, "the request's deadline has passed")
		return
	}
	p.step()
}

// tookOver counts a lost node's request another node accepted.
func (p *placement) tookOver(res *Result) {
	s := p.s
	s.stats.takeovers.Add(1)
	s.decisions.add(p.decision(res))
	s.log.Info().Str(logging.KeyRequest, p.spec.RequestID).Str("lost_node", p.lostNode()).Str(logging.KeyNode, res.Node).
		Int("attempts", res.Attempts).Bool("stream", p.spec.Stream).Msg("request of a lost node taken over")
	for _, mw := range s.mw {
		mw.AfterDispatch(&p.inbound, res)
	}
}

// lost ends a lost node's request that cannot continue: one final 503 with
// Fed-Lost-Node (set by fail, since p.takeover is the lost node) and no
// Fed-Node, and an unplaced event.
func (p *placement) lost(how, why string) {
	p.s.stats.lostFinals.Add(1)
	p.fail(wire.Errorf(wire.CodeNoCapacity, "node %s was lost after accepting the request (%s; %s)", p.lostNode(), how, why))
}
