package catalog

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
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

func (s *Service) alive(n record.Node, now time.Time) bool {
	return now.Sub(s.lastSign(n)) < s.cfg.NodeTTL
}

// decodeHeartbeat reads the parts of a heartbeat the catalog uses. The node
// id comes from the subject; a body that names another node is refused.
func decodeHeartbeat(subj string, data []byte) (node, instance string, err error) {
	node = subject.LastToken(subj)
	if err := wire.ValidateID("node_id", node); err != nil {
		return "", "", fmt.Errorf("heartbeat subject %q: %w", subj, err)
	}
	var hb record.Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return "", "", fmt.Errorf("heartbeat of node %s: %w", node, err)
	}
	if hb.NodeID != "" && hb.NodeID != node {
		return "", "", fmt.Errorf("heartbeat on %s names node %q", subj, hb.NodeID)
	}
	return node, hb.InstanceID, nil
}

func (s *Service) onHeartbeat(m *nats.Msg) {
	node, inst, err := decodeHeartbeat(m.Subject, m.Data)
	if err != nil {
		s.badMsgs.DroppedMessage(&s.log, err, m.Subject)
		return
	}
	s.live.mark(node, inst, time.Now())
}
