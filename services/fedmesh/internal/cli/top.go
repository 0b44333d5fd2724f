package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/tui"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func newTopCmd(g *globals) *cobra.Command {
	var interval time.Duration
	var once bool
	var sortBy string
	var width int
	cmd := &cobra.Command{
		Use:   "top",
		Short: "live view of nodes, health and stats (fed.catalog.list + fed.health.list + fed.stats); q quits",
		Long: `top polls fed.catalog.list, fed.health.list and fed.stats every --interval and shows
the mesh state, the totals and one row per node. Keys: q or ctrl-c quit, s cycles the
sort column, p pauses. Fetch errors show in the status line and the view keeps retrying.
--once prints one plain-text frame and exits (no terminal needed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := tui.ParseSortKey(sortBy)
			if err != nil {
				return err
			}
			if interval <= 0 {
				return fmt.Errorf("--interval must be positive, got %s", interval)
			}
			// One refresh is bounded by the view's own default unless
			// --timeout is set: the global 30 s would freeze a 1 s view.
			timeout := tui.DefaultTimeout
			if f := cmd.Flag("timeout"); f != nil && f.Changed {
				timeout = g.timeout
			}
			// The view shows the URL: never a password or token in it.
			url := servicecmd.Redact(g.natsURL)
			opts := tui.Options{Interval: interval, Timeout: timeout, Sort: key, NATSURL: url}
			if once {
				nc, err := g.connect("fedmesh-top")
				if err != nil {
					return err
				}
				defer nc.Close()
				f := &natsFetcher{nc: nc, subj: g.subjects(), url: url}
				return tui.Once(cmd.Context(), f, opts, cmd.OutOrStdout(), width)
			}
			// The live view outlasts server restarts: keep reconnecting and
			// let the status line say what is wrong meanwhile.
			nc, err := g.connect("fedmesh-top", nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
			if err != nil {
				return err
			}
			defer nc.Close()
			f := &natsFetcher{nc: nc, subj: g.subjects(), url: url}
			return tui.Run(cmd.Context(), f, opts, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&interval, "interval", tui.DefaultInterval, "refresh interval")
	fl.BoolVar(&once, "once", false, "print one plain-text frame and exit")
	fl.StringVar(&sortBy, "sort", "node", "initial sort column: "+strings.Join(tui.SortKeyNames(), ", "))
	fl.IntVar(&width, "width", 0, "with --once: cut lines to this many columns (0: no limit)")
	return cmd
}
