package catalog

import (
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/nats-io/nats.go"
)

// liveness remembers when each node (and each agent instance claiming it)
// was last heard from. Every catalog instance keeps its own copy from a
// plain subscription, so any of them can judge expiry and 409s.
type liveness struct {
	mu sync.Mutex
	// seen[node][instance]; instance "" is a heartbeat that named none.
	seen map[string]map[string]time.Time
}

func newLiveness() *liveness { return &liveness{seen: map[string]map[string]time.Time{}} }

func (l *liveness) mark(node, instance string, at time.Time) {
	l.mu.Lock()
	m := l.seen[node]
	if m == nil {
		m = map[string]time.Time{}
		l.seen[node] = m
	}
	m[instance] = at
	l.mu.Unlock()
}

// last returns when the given instance of node (or an anonymous heartbeat
// for node) was last heard.
func (l *liveness) last(node, instance string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.seen[node]
	t := m[instance]
	if a := m[""]; a.After(t) {
		t = a
	}
	return t
}

func (l *liveness) forget(node string) {
	l.mu.Lock()
	delete(l.seen, node)
	l.mu.Unlock()
}

// prune drops entries older than before so the map stays bounded by the
// nodes that are actually alive.
func (l *liveness) prune(before time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for node, m := range l.seen {
		for inst, t := range m {
			if t.Before(before) {
				delete(m, inst)
			}
		}
		if len(m) == 0 {
			delete(l.seen, node)
		}
	}
}

// lastSign is the latest sign of life of a registered node: a heartbeat of
// its instance, its registration, or this catalog's own start (a fresh
// instance has heard nothing yet and must not wipe live nodes).
func (s *Service) lastSign(n record.Node) time.Time {
	t := s.live.last(n.NodeID, n.InstanceID)
	if n.RegisteredAt.After(t) {
		t = n.RegisteredAt
	}
	if s.started.After(t) {
		t = s.started
	}
	return t
}

// holds reports whether n's instance still holds its node id against
// another instance: it gave a sign of life within TakeoverSilence. (Its
// record lives on until NodeTTL, so a restarted agent need not wait for
// that; settled: it used to, and a killed node was out for ≈ 10 s.)
func (s *Service) holds(n record.Node, now time.Time) bool {
	return now.Sub(s.lastSign(n)) < s.cfg.TakeoverSilence
}

func (s *Service) onHeartbeat(m *nats.Msg) {
	hb, err := record.DecodeHeartbeat(m.Subject, m.Data)
	if err != nil {
		s.badHeartbeats.DroppedMessage(&s.log, err, m.Subject)
		return
	}
	s.live.mark(hb.NodeID, hb.InstanceID, time.Now())
}
