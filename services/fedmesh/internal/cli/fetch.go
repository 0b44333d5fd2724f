package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// ask sends one micro request and decodes its JSON answer into v.
func ask(ctx context.Context, nc *nats.Conn, msg *nats.Msg, v any) error {
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return fmt.Errorf("request %s: %w", msg.Subject, err)
	}
	if werr := wire.ErrorFromHeader(resp.Header); werr != nil {
		return fmt.Errorf("%s: %w", msg.Subject, werr)
	}
	if err := json.Unmarshal(resp.Data, v); err != nil {
		return fmt.Errorf("decode answer of %s: %w", msg.Subject, err)
	}
	return nil
}

// fetchCatalog asks fed.catalog.list for every registered node.
func fetchCatalog(ctx context.Context, nc *nats.Conn, subj subject.Space) (api.ListResponse, error) {
	var cat api.ListResponse
	err := ask(ctx, nc, nats.NewMsg(subj.CatalogList()), &cat)
	return cat, err
}

// fetchHealth asks fed.health.list for every node's health record.
func fetchHealth(ctx context.Context, nc *nats.Conn, subj subject.Space) (api.HealthListResponse, error) {
	var hl api.HealthListResponse
	err := ask(ctx, nc, nats.NewMsg(subj.HealthList()), &hl)
	return hl, err
}

// fetchStats asks fed.stats for the mesh statistics.
func fetchStats(ctx context.Context, nc *nats.Conn, subj subject.Space) (record.Stats, error) {
	var s record.Stats
	err := ask(ctx, nc, nats.NewMsg(subj.Stats()), &s)
	return s, err
}
