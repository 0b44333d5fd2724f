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
			nc, err := g.connect("fedmesh-candidates")
			if err != nil {
				return err
			}
			defer nc.Close()
			msg := nats.NewMsg(g.subjects().RouterCandidates())
			req := rf.request(nil)
			h := msg.Header
			h.Set(wire.HdrCapability, req.Capability)
			for k, v := range map[string]string{wire.HdrModel: req.Model, wire.HdrTenant: req.Tenant,
				wire.HdrPrivacy: req.Privacy, wire.HdrRegion: req.Region, wire.HdrSession: req.Session,
				wire.HdrRegions: strings.Join(req.Regions, ",")} {
				if v != "" {
					h.Set(k, v)
				}
			}
			if rf.maxLatency > 0 {
				h.Set(wire.HdrMaxLatencyMs, fmt.Sprint(rf.maxLatency))
			}
			if rf.minThroughput > 0 {
				h.Set(wire.HdrMinThroughput, fmt.Sprint(rf.minThroughput))
			}
			if rf.costTolerance >= 0 {
				h.Set(wire.HdrCostTolerance, fmt.Sprint(rf.costTolerance))
			}
			if rf.noGPU {
				h.Set(wire.HdrPreferGPU, "false")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			var resp api.CandidatesResponse
			if err := ask(ctx, nc, msg, &resp); err != nil {
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
	fmt.Fprintf(tw, "NODE\tREGION\tMODEL\t%s\tTOTAL\tELIGIBLE\tNOTE\n", strings.ToUpper(strings.Join(policyOrder, "\t")))
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%v\t%s\n", c.NodeID, c.Region, c.ModelID, strings.Join(scores, "\t"), c.Total, c.Eligible, note)
	}
	_ = tw.Flush()
}

func newStatsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "print the mesh statistics (fed.stats)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := g.connect("fedmesh-stats")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			s, err := fetchStats(ctx, nc, g.subjects())
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), s)
		},
	}
}

func newNodesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "list registered nodes with their health (fed.catalog.list + fed.health.list)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := g.connect("fedmesh-nodes")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			cat, err := fetchCatalog(ctx, nc, g.subjects())
			if err != nil {
				return err
			}
			hl, err := fetchHealth(ctx, nc, g.subjects())
			if err != nil {
				return err
			}
			health := map[string]record.Health{}
			for _, h := range hl.Nodes {
				health[h.NodeID] = h
			}
			sort.Slice(cat.Nodes, func(i, j int) bool { return cat.Nodes[i].NodeID < cat.Nodes[j].NodeID })
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
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
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%d\n", n.NodeID, n.Region, n.GPU, n.Clearance,
					strings.Join(models, " "), h.State, h.Circuit, h.LatencyP50Ms, h.LatencyP99Ms, h.InFlight)
			}
			return tw.Flush()
		},
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
