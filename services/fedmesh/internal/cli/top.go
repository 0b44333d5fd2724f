package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/tui"
	"github.com/fedmesh/fedmesh/services/health/health"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

// topOnceTimeout bounds how long `top --once` waits for the mesh to load
// unless --timeout is set.
const topOnceTimeout = 10 * time.Second

func newTopCmd(g *globals) *cobra.Command {
	var (
		interval, resetTimeout time.Duration
		once                   bool
		sortBy, viewName       string
		width, halfOpen        int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "live views of the mesh: catalog, health, routing, circuits, stats, policies; q quits",
		Long: `top follows the mesh live: the fed_catalog, fed_health and fed_config buckets
(KV watches), the routers' decisions (fed.router.decisions) joined with each request's
end (fed.outcome.*, fed.router.unplaced), and the health service's fed.health.stats
events (fed.stats is asked once at start and after a reconnect; req/s and p99
sparklines get a point per event, and a zero point every --interval while the mesh is
quiet). Views: 1 catalog, 2 health, 3 routing,
4 circuits, 5 stats, 6 policies, 7 help. Keys: tab / shift-tab or 1-7 switch views,
arrows scroll, / filters rows, s sorts the node tables, p pauses, ? helps, q quits.
The header shows the true connection state ("disconnected, reconnecting" while so).
--once prints one plain-text frame of --view and exits (no terminal needed); for the
routing view it first gathers decisions for --interval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := tui.ParseSortKey(sortBy)
			if err != nil {
				return err
			}
			view, err := tui.ParseView(viewName)
			if err != nil {
				return err
			}
			if interval <= 0 {
				return fmt.Errorf("--interval must be positive, got %s", interval)
			}
			// One fed.stats request is bounded by the view's own default
			// unless --timeout is set: the global 30 s would freeze a 1 s view.
			timeout := tui.DefaultTimeout
			timeoutSet := false
			if f := cmd.Flag("timeout"); f != nil && f.Changed {
				timeout, timeoutSet = g.timeout, true
			}
			// The view shows the URL: never a password or token in it.
			url := servicecmd.Redact(g.natsURL)
			var opts []nats.Option
			if !once {
				// The live view outlasts server restarts: keep reconnecting
				// and let the header say so meanwhile.
				opts = append(opts, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
			}
			nc, err := g.connect("fedmesh-top", opts...)
			if err != nil {
				return err
			}
			defer nc.Close()
			subj := g.subjects()
			live := tui.NewLive(nc, tui.LiveOptions{
				Subjects: subj, Interval: interval, Timeout: timeout, URL: url,
				ResetTimeout: resetTimeout, HalfOpenSuccesses: halfOpen,
				Stats: func(ctx context.Context) (record.Stats, error) { return fetchStats(ctx, nc, subj) },
			})
			if err := live.Start(cmd.Context()); err != nil {
				return err
			}
			defer func() {
				if !nc.IsConnected() {
					// Stopping a watch deletes its consumer on the server:
					// with no server, do not wait out each request's timeout.
					nc.Close()
				}
				_ = live.Stop()
			}()
			if once {
				wait := topOnceTimeout
				if timeoutSet {
					wait = timeout
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), wait)
				defer cancel()
				o := tui.OnceOptions{View: view, Sort: key, Width: width}
				if view == tui.ViewRouting {
					o.Collect = interval
				}
				return tui.Once(ctx, live, o, cmd.OutOrStdout())
			}
			return tui.Run(cmd.Context(), live, tui.Options{View: view, Sort: key}, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&interval, "interval", tui.DefaultInterval, "while the mesh is quiet (no fed.health.stats event), one zero point on the stats sparklines each; how often an unanswered fed.stats is asked again; with --once --view routing, how long to gather decisions")
	fl.BoolVar(&once, "once", false, "print one plain-text frame of --view and exit")
	fl.StringVar(&viewName, "view", tui.ViewCatalog.String(), "view to show (first): "+strings.Join(tui.ViewNames(), ", "))
	fl.StringVar(&sortBy, "sort", "node", "initial sort column of the node tables: "+strings.Join(tui.SortKeyNames(), ", "))
	fl.IntVar(&width, "width", 0, "with --once: lay the frame out for this many columns, dropping low-priority columns (0: every column)")
	fl.DurationVar(&resetTimeout, "reset-timeout", health.DefaultResetTimeout, "the health service's --reset-timeout, for the circuits view's time to half-open")
	fl.IntVar(&halfOpen, "half-open-successes", health.DefaultHalfOpenSuccesses, "the health service's --half-open-successes, for the circuits view")
	return cmd
}
