package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/shared/blobs"
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
	var outFile string
	var maxBody int64
	cmd := &cobra.Command{
		Use:   "infer [flags] INPUT  (or - for standard input)",
		Short: "send one inference request into the mesh",
		Long: "Sends INPUT (or standard input, streamed, with -) as one request. A body too large for one NATS message\n" +
			"goes out of band through the fed_blobs object store, up to --max-body; so does a large answer.\n" +
			"--out writes the answer to a file as it arrives (binary answers: synthesize audio, images).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := rf.request([]byte(args[0]))
			if args[0] == "-" {
				req.Body, req.BodyReader = nil, cmd.InOrStdin()
				req.BodySize = sizeOf(cmd.InOrStdin())
			}
			copts := []client.Option{client.WithSubjects(g.subjects()), client.WithMaxBody(maxBody)}
			// a client credential names its tenant: requests go on the
			// tenant's subject, the only one it may publish (DESIGN §16)
			if id := g.identity(); id.Role == auth.RoleClient {
				if req.Tenant != "" && req.Tenant != id.Tenant {
					return &wire.Error{Code: wire.CodeBadRequest,
						Description: fmt.Sprintf("--tenant %s: the credential %s is tenant %s's", req.Tenant, g.conn.Creds, id.Tenant)}
				}
				req.Tenant = id.Tenant
				copts = append(copts, client.WithTenant(id.Tenant))
			}
			return g.withConn(cmd, "fedmesh-infer", func(ctx context.Context, nc *nats.Conn) error {
				c, err := client.New(nc, copts...)
				if err != nil {
					return err
				}
				defer c.Close()
				summary := io.Discard
				if verbose {
					summary = cmd.ErrOrStderr()
				}
				out, newline := cmd.OutOrStdout(), true
				if outFile != "" {
					f, err := os.Create(outFile)
					if err != nil {
						return fmt.Errorf("--out: %w", err)
					}
					defer f.Close()
					out, newline = f, false // the answer's bytes as they are
				}
				if stream {
					err = inferStream(ctx, c, req, out, summary, newline)
				} else {
					err = inferWhole(ctx, c, req, out, summary, newline)
				}
				if f, ok := out.(*os.File); ok && outFile != "" {
					if cerr := f.Close(); err == nil && cerr != nil {
						err = fmt.Errorf("--out: %w", cerr)
					}
				}
				return err
			})
		},
	}
	rf.add(cmd)
	cmd.Flags().BoolVarP(&stream, "stream", "s", false, "print tokens as they arrive")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print which node answered, tokens and latency to stderr")
	cmd.Flags().StringVarP(&outFile, "out", "o", "", "write the answer to this file (as it arrives, no newline added) instead of standard output")
	cmd.Flags().Int64Var(&maxBody, "max-body", blobs.DefaultMaxBytes, "largest request body (and answer) in bytes; a larger one is refused before anything is sent")
	return cmd
}

// sizeOf is r's size when it is a regular file (stdin redirected from a
// file), else 0 (unknown: the SDK reads it as it goes).
func sizeOf(r io.Reader) int64 {
	f, ok := r.(*os.File)
	if !ok {
		return 0
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return 0
	}
	if off, err := f.Seek(0, io.SeekCurrent); err == nil {
		return st.Size() - off
	}
	return st.Size()
}

// inferWhole writes the whole answer (streamed from the blob store when it
// came out of band), then who answered to summary.
func inferWhole(ctx context.Context, c *client.Client, req client.Request, out, summary io.Writer, newline bool) error {
	resp, err := c.InferTo(ctx, req, out)
	if err != nil {
		return err
	}
	if newline {
		fmt.Fprintln(out)
	}
	fmt.Fprintf(summary, "request %s: node %s, %d tokens, %d bytes, %.1f ms\n", resp.RequestID, resp.Node, resp.Tokens, resp.Size, resp.LatencyMs)
	return nil
}

// inferStream writes tokens as they arrive, then who answered to summary.
func inferStream(ctx context.Context, c *client.Client, req client.Request, out, summary io.Writer, newline bool) error {
	st, err := c.InferStream(ctx, req)
	if err != nil {
		return err
	}
	defer st.Close()
	for ch, err := range st.Chunks() {
		if err != nil {
			if newline {
				fmt.Fprintln(out)
			}
			return err
		}
		if _, err := out.Write(ch.Data); err != nil {
			return fmt.Errorf("write the answer: %w", err)
		}
		if f, ok := out.(*os.File); ok && newline {
			_ = f.Sync()
		}
	}
	if newline {
		fmt.Fprintln(out)
	}
	res, err := st.Result()
	if err != nil {
		return err
	}
	fmt.Fprintf(summary, "request %s: node %s, %d tokens, ttft %.1f ms, %.1f ms\n", res.RequestID, res.Node, res.Tokens, res.TTFTMs, res.LatencyMs)
	return nil
}
