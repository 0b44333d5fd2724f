package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// register sends the node's record to the catalog. While no catalog answers
// (no responders, timeout, catalog busy) it retries every RegisterRetry until
// ctx ends; a refusal (bad record, another live instance owns the id) is final.
func (s *Service) register(ctx context.Context) error {
	body, err := json.Marshal(api.RegisterRequest(s.cfg.record(s.instance)))
	if err != nil {
		return fmt.Errorf("node %s: encode registration: %w", s.cfg.NodeID, err)
	}
	for attempt := 1; ; attempt++ {
		resp, err := s.request(ctx, s.cfg.Subjects.CatalogRegister(), body)
		if err == nil {
			var out api.RegisterResponse
			if jerr := json.Unmarshal(resp.Data, &out); jerr != nil {
				return fmt.Errorf("node %s: malformed register answer: %w", s.cfg.NodeID, jerr)
			}
			s.log.Info().Bool("replaced", out.Replaced).Int("attempts", attempt).Msg("registered with catalog")
			return nil
		}
		var we *wire.Error
		if errors.As(err, &we) && we.Code != wire.CodeNoCapacity && we.Code != wire.CodeTimeout {
			return fmt.Errorf("node %s: catalog refused registration: %w", s.cfg.NodeID, err)
		}
		if errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("node %s: register: %w", s.cfg.NodeID, err)
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Warn().Err(err).Int("attempt", attempt).Msg("no catalog answered the registration yet, retrying")
		}
		t := time.NewTimer(s.cfg.RegisterRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("node %s: register: no catalog answered after %d attempts: %w", s.cfg.NodeID, attempt, ctx.Err())
		case <-t.C:
		}
	}
}

// deregister removes the node's record; "not registered" counts as done.
func (s *Service) deregister() error {
	body, _ := json.Marshal(api.DeregisterRequest{NodeID: s.cfg.NodeID, InstanceID: s.instance}) // two strings: cannot fail
	_, err := s.request(context.Background(), s.cfg.Subjects.CatalogDeregister(), body)
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
