package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/shared/api"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

func newCandidatesCmd(g *globals) *cobra.Command {
	var rf requestFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "candidates",
		Short: "show how the router scores every node for a request (fed.router.candidates)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec, err := rf.spec()
			if err != nil {
				return err
			}
			msg := nats.NewMsg(g.subjects().RouterCandidates())
			msg.Header.Set(wire.HdrCapability, rf.capability)
			spec.Encode(msg.Header)
			var resp api.CandidatesResponse
			if err := g.withConn(cmd, "fedmesh-candidates", func(ctx context.Context, nc *nats.Conn) error {
				return ask(ctx, nc, msg, &resp)
			}); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			printCandidates(cmd.OutOrStdout(), &resp)
			return nil
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

var policyOrder = []string{"health", "latency", "privacy", "locality", "cost", "load"}

func printCandidates(w io.Writer, r *api.CandidatesResponse) {
	fmt.Fprintf(w, "capability %s, strategy %s", r.Capability, r.Strategy)
	if r.Decisive != "" {
		fmt.Fprintf(w, ", decided by %s", r.Decisive)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tREGION\tMODEL\t%s\tTOTAL\tTTFT~MS\tPREFIX\tELIGIBLE\tNOTE\n", strings.ToUpper(strings.Join(policyOrder, "\t")))
	for _, c := range r.Candidates {
		scores := make([]string, len(policyOrder))
		for i, p := range policyOrder {
			scores[i] = fmt.Sprintf("%.2f", c.Scores[p])
		}
		note := ""
		switch {
		case c.Chosen:
			note = "← chosen"
		case !c.Eligible:
			note = c.RejectedBy + ": " + c.Reason
		}
		ttft, prefix := "-", "-" // expected_ttft's judgement (eligible candidates only)
		if c.PredictedTTFTMs > 0 {
			ttft = fmt.Sprintf("%.1f", c.PredictedTTFTMs)
		}
		if c.Eligible {
			prefix = fmt.Sprintf("%.2f", c.PrefixMatch)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%s\t%s\t%v\t%s\n", c.NodeID, c.Region, c.ModelID, strings.Join(scores, "\t"), c.Total, ttft, prefix, c.Eligible, note)
	}
	_ = tw.Flush()
}

// newShowCmd is a command that asks the mesh once, on a connection named
// after it, and prints what show writes.
func newShowCmd(g *globals, use, short string, show func(ctx context.Context, nc *nats.Conn, w io.Writer) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withConn(cmd, "fedmesh-"+use, func(ctx context.Context, nc *nats.Conn) error {
				return show(ctx, nc, cmd.OutOrStdout())
			})
		},
	}
}

func newStatsCmd(g *globals) *cobra.Command {
	return newShowCmd(g, "stats", "print the mesh statistics (fed.stats)", func(ctx context.Context, nc *nats.Conn, w io.Writer) error {
		s, err := fetchStats(ctx, nc, g.subjects())
		if err != nil {
			return err
		}
		return printJSON(w, s)
	})
}

func newNodesCmd(g *globals) *cobra.Command {
	return newShowCmd(g, "nodes", "list registered nodes with their health (fed.catalog.list + fed.health.list)",
		func(ctx context.Context, nc *nats.Conn, w io.Writer) error {
			cat, err := fetchCatalog(ctx, nc, g.subjects())
			if err != nil {
				return err
			}
			hl, err := fetchHealth(ctx, nc, g.subjects())
			if err != nil {
				return err
			}
			return printNodes(w, cat, hl)
		})
}

// printNodes writes one row per catalog node with its health; a node with
// no health record yet shows as unknown with a closed circuit, and latencies
// without samples as noData.
func printNodes(w io.Writer, cat api.ListResponse, hl api.HealthListResponse) error {
	health := map[string]record.Health{}
	for _, h := range hl.Nodes {
		health[h.NodeID] = h
	}
	sort.Slice(cat.Nodes, func(i, j int) bool { return cat.Nodes[i].NodeID < cat.Nodes[j].NodeID })
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREGION\tGPU\tCLEARANCE\tMODELS\tSTATE\tCIRCUIT\tP50 MS\tP99 MS\tIN FLIGHT")
	for _, n := range cat.Nodes {
		models := make([]string, len(n.Models))
		for i, m := range n.Models {
			models[i] = m.ModelID + "(" + strings.Join(m.Capabilities, ",") + ")"
		}
		h, ok := health[n.NodeID]
		if !ok {
			h = record.Health{State: record.StateUnknown, Circuit: record.CircuitClosed}
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", n.NodeID, n.Region, n.GPU, n.Clearance,
			strings.Join(models, " "), h.State, h.Circuit, msCell(h.LatencyP50Ms), msCell(h.LatencyP99Ms), h.InFlight)
	}
	return tw.Flush()
}

// noData is the CLI's one placeholder for a value not known yet, as `top`
// shows it: a node without latency samples has no p50, not a p50 of 0.
const noData = "-"

// msCell is a latency column: milliseconds to 0.1, or noData.
func msCell(v float64) string {
	if !(v > 0) { // also NaN
		return noData
	}
	return fmt.Sprintf("%.1f", v)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
