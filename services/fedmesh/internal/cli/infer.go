package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// requestFlags are the routing options a request can carry.
type requestFlags struct {
	capability, model, tenant, privacy, region, session string
	regions                                             []string
	maxLatency, minThroughput                           float64
	costTolerance                                       int
	noGPU                                               bool
}

func (f *requestFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.capability, "capability", "c", "generate", "capability: generate, code, embed, transcribe, synthesize, imagegen, custom.<name>")
	fl.StringVarP(&f.model, "model", "m", "", "a specific model id")
	fl.StringVar(&f.tenant, "tenant", "", "tenant")
	fl.StringVar(&f.privacy, "privacy", "", "public, internal (default), confidential, restricted")
	fl.StringSliceVar(&f.regions, "regions", nil, "regions the data may go to")
	fl.StringVar(&f.region, "region", "", "the caller's region (locality)")
	fl.StringVar(&f.session, "session", "", "sticky session key")
	fl.Float64Var(&f.maxLatency, "max-latency-ms", 0, "drop nodes whose p99 exceeds this")
	fl.Float64Var(&f.minThroughput, "min-throughput", 0, "drop nodes slower than this (tokens/s)")
	fl.IntVar(&f.costTolerance, "cost-tolerance", -1, "0 cheapest … 100 fastest (default 50)")
	fl.BoolVar(&f.noGPU, "no-gpu-preference", false, "do not prefer GPU nodes")
}

func (f *requestFlags) request(body []byte) client.Request {
	r := client.Request{Capability: f.capability, Body: body, Model: f.model, Tenant: f.tenant,
		Privacy: f.privacy, Regions: f.regions, Region: f.region, Session: f.session,
		MaxLatencyMs: f.maxLatency, MinThroughput: f.minThroughput}
	if f.costTolerance >= 0 {
		ct := f.costTolerance
		r.CostTolerance = &ct
	}
	if f.noGPU {
		no := false
		r.PreferGPU = &no
	}
	return r
}

// spec is the routing part of the flags, as the router reads it from the
// headers wire.Spec.Encode writes.
func (f *requestFlags) spec() (wire.Spec, error) {
	s := wire.NewSpec()
	p, err := wire.ParsePrivacy(f.privacy)
	if err != nil {
		return s, &wire.Error{Code: wire.CodeBadRequest, Description: "--privacy: " + err.Error()}
	}
	s.Tenant, s.Model, s.Privacy, s.Regions = f.tenant, f.model, p, f.regions
	s.MaxLatencyMs, s.MinThroughput, s.Region, s.Session = f.maxLatency, f.minThroughput, f.region, f.session
	if f.costTolerance >= 0 {
		s.CostTolerance = f.costTolerance
	}
	s.PreferGPU = !f.noGPU
	return s, nil
}

func newInferCmd(g *globals) *cobra.Command {
	var rf requestFlags
	var stream, verbose bool
	cmd := &cobra.Command{
		Use:   "infer [flags] INPUT  (or - for standard input)",
		Short: "send one inference request into the mesh",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := []byte(args[0])
			if args[0] == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("read input: %w", err)
				}
				body = b
			}
			return g.withConn(cmd, "fedmesh-infer", func(ctx context.Context, nc *nats.Conn) error {
				c, err := client.New(nc, client.WithSubjects(g.subjects()))
				if err != nil {
					return err
				}
				defer c.Close()
				out, summary := cmd.OutOrStdout(), io.Discard
				if verbose {
					summary = cmd.ErrOrStderr()
				}
				if stream {
					return inferStream(ctx, c, rf.request(body), out, summary)
				}
				return inferWhole(ctx, c, rf.request(body), out, summary)
			})
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVarP(&stream, "stream", "s", false, "print tokens as they arrive")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print which node answered, tokens and latency to stderr")
	return cmd
}

// inferWhole prints the whole answer, then who answered to summary.
func inferWhole(ctx context.Context, c *client.Client, req client.Request, out, summary io.Writer) error {
	resp, err := c.Infer(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, string(resp.Body))
	fmt.Fprintf(summary, "request %s: node %s, %d tokens, %.1f ms\n", resp.RequestID, resp.Node, resp.Tokens, resp.LatencyMs)
	return nil
}

// inferStream prints tokens as they arrive, then who answered to summary.
func inferStream(ctx context.Context, c *client.Client, req client.Request, out, summary io.Writer) error {
	st, err := c.InferStream(ctx, req)
	if err != nil {
		return err
	}
	defer st.Close()
	for ch, err := range st.Chunks() {
		if err != nil {
			fmt.Fprintln(out)
			return err
		}
		fmt.Fprint(out, string(ch.Data))
		if f, ok := out.(*os.File); ok {
			_ = f.Sync()
		}
	}
	fmt.Fprintln(out)
	res, err := st.Result()
	if err != nil {
		return err
	}
	fmt.Fprintf(summary, "request %s: node %s, %d tokens, ttft %.1f ms, %.1f ms\n", res.RequestID, res.Node, res.Tokens, res.TTFTMs, res.LatencyMs)
	return nil
}
