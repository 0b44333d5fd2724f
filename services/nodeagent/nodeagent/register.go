package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// register sends the node's record to the catalog. It retries every
// RegisterRetry until the catalog takes it or ctx ends: while no catalog
// answers (no responders, timeout, 5xx: busy, a KV failure) and while
// another live instance holds the node id (409: a restarted agent waits
// until its previous instance has been silent for the catalog's
// takeover_silence, 3 s). Any other refusal (400: a record the catalog
// rejects) is final, and so is a closed connection.
func (s *Service) register(ctx context.Context) error {
	body, err := json.Marshal(api.RegisterRequest(s.cfg.record(s.instance)))
	if err != nil {
		return fmt.Errorf("node %s: encode registration: %w", s.cfg.NodeID, err)
	}
	waiting := false // a 409 was logged
	for attempt := 1; ; attempt++ {
		resp, err := s.request(ctx, s.cfg.Subjects.CatalogRegisterAs(s.cfg.NodeID, s.cfg.Region, s.cfg.Clearance.String()), body)
		if err == nil {
			var out api.RegisterResponse
			if jerr := json.Unmarshal(resp.Data, &out); jerr != nil {
				return fmt.Errorf("node %s: malformed register answer: %w", s.cfg.NodeID, jerr)
			}
			s.log.Info().Bool("replaced", out.Replaced).Int("attempts", attempt).Msg("registered with catalog")
			return s.serve()
		}
		var we *wire.Error
		isWire := errors.As(err, &we)
		switch {
		case errors.Is(err, nats.ErrConnectionClosed):
			return fmt.Errorf("node %s: register: %w", s.cfg.NodeID, err)
		case isWire && we.Code == wire.CodeConflict:
			if !s.isServing() {
				// Not ours yet: off the node's subjects while another
				// holds it. A serving instance learns of a takeover from
				// its record (followRecord); a 409 may be the catalog's
				// transient "concurrent registrations".
				s.standDown(we.Description)
			}
			if !waiting {
				waiting = true
				ev := s.log.Info().Str("catalog", we.Description)
				if ttl, ok := nodeTTLHint(we.Description); ok {
					ev = ev.Dur("node_ttl", ttl)
				}
				ev.Msg("node id held by another live instance: waiting for the previous instance to fall silent")
			}
		case isWire && we.Code < 500:
			return fmt.Errorf("node %s: catalog refused registration: %w", s.cfg.NodeID, err)
		case attempt == 1 || attempt%20 == 0:
			s.log.Warn().Err(err).Int("attempt", attempt).Msg("no catalog answered the registration yet, retrying")
		}
		t := time.NewTimer(s.cfg.RegisterRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			why := "no catalog answered"
			if waiting {
				// a 409 was seen: the last attempt may only have been cut
				// by this same deadline
				why = "the previous instance still held the node id"
			}
			return fmt.Errorf("node %s: register: %s after %d attempts: %w", s.cfg.NodeID, why, attempt, ctx.Err())
		case <-t.C:
		}
	}
}

// ttlHint finds the catalog's node_ttl in its 409 text ("… it expires 10s
// after its last heartbeat").
var ttlHint = regexp.MustCompile(`expires (\S+) after`)

// nodeTTLHint is the node_ttl a 409 description names, if any.
func nodeTTLHint(desc string) (time.Duration, bool) {
	m := ttlHint.FindStringSubmatch(desc)
	if m == nil {
		return 0, false
	}
	d, err := time.ParseDuration(m[1])
	return d, err == nil && d > 0
}

// deregister removes the node's record; "not registered" counts as done.
func (s *Service) deregister() error {
	body, _ := json.Marshal(api.DeregisterRequest{NodeID: s.cfg.NodeID, InstanceID: s.instance}) // two strings: cannot fail
	_, err := s.request(context.Background(), s.cfg.Subjects.CatalogDeregisterAs(s.cfg.NodeID), body)
	var we *wire.Error
	if err == nil || errors.As(err, &we) && we.Code == wire.CodeNotFound {
		s.log.Info().Msg("deregistered from catalog")
		return nil
	}
	return fmt.Errorf("node %s: deregister: %w", s.cfg.NodeID, err)
}

// request is one catalog call bounded by RegisterTimeout; an error answer
// comes back as *wire.Error.
func (s *Service) request(ctx context.Context, subj string, body []byte) (*nats.Msg, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RegisterTimeout)
	defer cancel()
	resp, err := s.nc.RequestWithContext(rctx, subj, body)
	if err != nil {
		return nil, err
	}
	if we := wire.ErrorFromHeader(resp.Header); we != nil {
		we.Node = s.cfg.NodeID
		return nil, we
	}
	return resp, nil
}
