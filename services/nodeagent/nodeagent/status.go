package nodeagent

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// maxStatusBody bounds a status request's body: an id of MaxRequestIDLen
// bytes fits many times over.
const maxStatusBody = 1024

// answeredKeep bounds the requests a node remembers answering, for
// fed.node.<id>.status; each is kept Config.ReplayKeep after its final.
const answeredKeep = 4096

// answeredIDs remembers the requests whose final this node sent lately,
// streamed or whole, so a router whose ack was lost learns the node
// answered (a whole answer is not in the replay buffer). Its own lock: the
// status endpoint never waits on Service.mu for it.
type answeredIDs struct {
	mu    sync.Mutex
	at    map[string]time.Time
	order []string // ring, oldest overwritten first
	next  int
}

func newAnsweredIDs() *answeredIDs {
	return &answeredIDs{at: map[string]time.Time{}, order: make([]string, answeredKeep)}
}

// add records that the final of id goes out now.
func (a *answeredIDs) add(id string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.at[id]; !ok {
		// id is sliced from its dispatch's header block (nats.go): kept
		// for answeredKeep more requests, it would pin the whole block.
		id = strings.Clone(id)
		if old := a.order[a.next]; old != "" {
			delete(a.at, old)
		}
		a.order[a.next] = id
		a.next = (a.next + 1) % len(a.order)
	}
	a.at[id] = now
}

// has reports whether id was answered within keep of now.
func (a *answeredIDs) has(id string, now time.Time, keep time.Duration) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.at[id]
	return ok && now.Sub(t) < keep
}

// decodeStatusRequest reads a status request's body strictly, the way
// every request body a node takes is read (decodeStrict). Anything else is
// a 400 naming the field.
func decodeStatusRequest(data []byte) (api.StatusRequest, *wire.Error) {
	var sr api.StatusRequest
	if werr := decodeStrict("status request", data, maxStatusBody, &sr, &sr.RequestID); werr != nil {
		return api.StatusRequest{}, werr
	}
	return sr, nil
}

// holds reports whether the node holds request id: a job it accepted and
// runs (not one a targeted cancel withdrew), or a final it sent lately.
// Memory only; the backend is never asked.
func (s *Service) holds(id string) bool {
	return s.runs(id) || s.answered.has(id, time.Now(), s.cfg.ReplayKeep)
}

// runs reports whether the node runs request id: a job it accepted (not
// one a targeted cancel withdrew) and has not ended.
func (s *Service) runs(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.jobs[id] {
		if context.Cause(j.ctx) != errWithdrawn {
			return true
		}
	}
	return false
}

// onHeld answers fed.held.<request_id> (DESIGN §3.8) when the node runs
// that request; otherwise it stays silent, as every router and node that
// does not hold it does. Not a finished one: a client asking has heard
// nothing, and a whole answer is not kept, so only sending the request
// again gets it an answer.
func (s *Service) onHeld(m *nats.Msg) {
	if m.Reply == "" || !s.runs(subject.LastToken(m.Subject)) {
		return
	}
	if err := m.Respond(api.HeldAnswer); err != nil {
		s.log.Debug().Err(err).Str(logging.KeyRequest, subject.LastToken(m.Subject)).Msg("held answer not sent")
	}
}

// handleStatus serves fed.node.<id>.status: a router whose dispatch ack
// never came asks whether this node holds the request before it places
// the request elsewhere (DESIGN §4); held makes it count as accepted.
func (s *Service) handleStatus(req micro.Request) {
	sr, werr := decodeStatusRequest(req.Data())
	if werr != nil {
		werr.Node = s.cfg.NodeID
		werr.Description = "node " + s.cfg.NodeID + ": " + werr.Description
		s.log.Debug().Str(logging.KeyRequest, werr.RequestID).Str("error", werr.Description).Msg("status request refused")
		if err := wire.RespondError(s.nc, req.Reply(), werr); err != nil {
			s.log.Debug().Err(err).Str(logging.KeyRequest, werr.RequestID).Msg("status refusal not sent")
		}
		return
	}
	held := s.holds(sr.RequestID)
	s.log.Debug().Str(logging.KeyRequest, sr.RequestID).Bool("held", held).Msg("status asked")
	_ = req.RespondJSON(api.StatusResponse{Held: held})
}
