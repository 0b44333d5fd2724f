package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/tui"
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

// natsFetcher builds tui snapshots from the three micro endpoints
// (fed.catalog.list, fed.health.list, fed.stats): no KV reads.
type natsFetcher struct {
	nc   *nats.Conn
	subj subject.Space
	url  string // shown when the connection has no server yet
}

var _ tui.Fetcher = (*natsFetcher)(nil)

// Fetch implements tui.Fetcher.
func (f *natsFetcher) Fetch(ctx context.Context) (tui.Snapshot, error) {
	if !f.nc.IsConnected() {
		// Requests would only wait for the deadline: say what is wrong.
		return tui.Snapshot{}, fmt.Errorf("not connected to %s: %s", f.url, strings.ToLower(f.nc.Status().String()))
	}
	cat, err := fetchCatalog(ctx, f.nc, f.subj)
	if err != nil {
		return tui.Snapshot{}, err
	}
	hl, err := fetchHealth(ctx, f.nc, f.subj)
	if err != nil {
		return tui.Snapshot{}, err
	}
	st, err := fetchStats(ctx, f.nc, f.subj)
	if err != nil {
		return tui.Snapshot{}, err
	}
	s := tui.BuildSnapshot(cat, hl, st, time.Now())
	s.NATSURL = f.nc.ConnectedUrlRedacted()
	if s.NATSURL == "" {
		s.NATSURL = f.url
	}
	return s, nil
}
