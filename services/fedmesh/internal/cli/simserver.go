package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/simserver"
	"github.com/fedmesh/fedmesh/shared/logging"
)

// simOpts are the simserver command's flags; the profile's numbers are
// overridden only by the flags given.
type simOpts struct {
	listen, profile, logFormat, logLevel string
	timeScale                            float64
	seed                                 uint64
	models                               []string
	p                                    simserver.Profile
}

func newSimserverCmd() *cobra.Command {
	o := &simOpts{}
	cmd := &cobra.Command{
		Use:   "simserver",
		Short: "run a simulated OpenAI-compatible model server that behaves like vLLM under load",
		Long: `simserver answers chat, completions and embeddings like a vLLM server would: continuous
batching (a step slows as the batch grows), prefill time proportional to the prompt tokens its
prefix cache does not hold, KV blocks that bound the running batch (the rest waits), and vLLM's
/metrics. Answers are deterministic words from --seed and the prompt; timings follow the profile
(` + simserver.ProfileNames() + `), each of whose numbers a flag can override.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.New(cmd.ErrOrStderr(), o.logFormat, o.logLevel)
			cfg, err := o.config(cmd.Flags())
			if err != nil {
				return err
			}
			cfg.Log = logging.Component(log, "simserver")
			srv, err := simserver.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			p := srv.Profile()
			log.Info().Str("url", srv.URL()).Str("openai_base_url", srv.URL()+"/v1").Strs("models", srv.Models()).
				Str("profile", p.Name).Float64("time_scale", cfg.TimeScale).Uint64("seed", cfg.Seed).
				Dur("decode_base", p.DecodeBase).Dur("decode_per_seq", p.DecodePerSeq).Float64("prefill_rate", p.PrefillRate).
				Int("kv_blocks", p.KVBlocks).Int("block_size", p.BlockSize).Int("max_num_seqs", p.MaxNumSeqs).
				Msg("simserver is up — metrics at /metrics (Ctrl-C to stop)")
			<-cmd.Context().Done()
			return srv.Stop()
		},
	}
	o.bind(cmd.Flags())
	return cmd
}

// bind defines the flags on f.
func (o *simOpts) bind(f *pflag.FlagSet) {
	f.StringVar(&o.listen, "listen", simserver.DefaultAddr, "host:port to serve the OpenAI-compatible API on (port 0 picks one)")
	f.StringVar(&o.profile, "profile", simserver.DefaultProfile, "speed profile: "+simserver.ProfileNames())
	f.Float64Var(&o.timeScale, "time-scale", simserver.DefaultTimeScale, "simulated seconds per real second (10 runs 10× faster; metrics stay in simulated time)")
	f.Uint64Var(&o.seed, "seed", 0, "seed of the answers: the same seed gives the same answers")
	f.StringSliceVar(&o.models, "model", []string{simserver.DefaultModel}, "served model names, aliases of one engine (repeat or comma-separate)")
	f.DurationVar(&o.p.DecodeBase, "decode-base", 0, "fixed time of one engine step (default: the profile's)")
	f.DurationVar(&o.p.DecodePerSeq, "decode-per-seq", 0, "time each decoding sequence adds to a step (default: the profile's)")
	f.Float64Var(&o.p.PrefillRate, "prefill-rate", 0, "uncached prompt tokens prefilled per second (default: the profile's)")
	f.IntVar(&o.p.KVBlocks, "kv-blocks", 0, "KV cache blocks (default: the profile's)")
	f.IntVar(&o.p.BlockSize, "block-size", 0, "tokens per KV block (default: the profile's)")
	f.IntVar(&o.p.MaxNumSeqs, "max-num-seqs", 0, "most sequences in the running batch (default: the profile's)")
	f.IntVar(&o.p.MaxBatchedTokens, "max-num-batched-tokens", 0, "token budget of one step (default: the profile's)")
	f.IntVar(&o.p.MaxModelLen, "max-model-len", 0, "most prompt + answer tokens of a request (default: the profile's)")
	f.IntVar(&o.p.PrefixCacheBlocks, "prefix-cache-blocks", 0, "most blocks of finished requests kept for prefix hits (default: all of the KV cache)")
	f.IntVar(&o.p.OutputTokens, "output-tokens", 0, "typical answer length without max_tokens (default: the profile's)")
	f.StringVar(&o.logFormat, "log-format", logging.FormatConsole, "console or json")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn, error")
}

// config is the server's config: the named profile, with every rate flag
// that was given in its place. A flag given as 0 or less is an error
// rather than "the profile's": it was asked for.
func (o *simOpts) config(f *pflag.FlagSet) (simserver.Config, error) {
	p, err := simserver.ProfileByName(o.profile)
	if err != nil {
		return simserver.Config{}, fmt.Errorf("--profile: %w", err)
	}
	durations := []struct {
		flag     string
		from, to *time.Duration
	}{{"decode-base", &o.p.DecodeBase, &p.DecodeBase}, {"decode-per-seq", &o.p.DecodePerSeq, &p.DecodePerSeq}}
	for _, d := range durations {
		if f.Changed(d.flag) {
			if *d.from <= 0 {
				return simserver.Config{}, fmt.Errorf("--%s %s: want > 0", d.flag, *d.from)
			}
			*d.to = *d.from
		}
	}
	if f.Changed("prefill-rate") {
		if !(o.p.PrefillRate > 0) {
			return simserver.Config{}, fmt.Errorf("--prefill-rate %v: want > 0", o.p.PrefillRate)
		}
		p.PrefillRate = o.p.PrefillRate
	}
	ints := []struct {
		flag     string
		from, to *int
	}{
		{"kv-blocks", &o.p.KVBlocks, &p.KVBlocks}, {"block-size", &o.p.BlockSize, &p.BlockSize},
		{"max-num-seqs", &o.p.MaxNumSeqs, &p.MaxNumSeqs}, {"max-num-batched-tokens", &o.p.MaxBatchedTokens, &p.MaxBatchedTokens},
		{"max-model-len", &o.p.MaxModelLen, &p.MaxModelLen}, {"prefix-cache-blocks", &o.p.PrefixCacheBlocks, &p.PrefixCacheBlocks},
		{"output-tokens", &o.p.OutputTokens, &p.OutputTokens},
	}
	for _, n := range ints {
		if f.Changed(n.flag) {
			if *n.from < 1 {
				return simserver.Config{}, fmt.Errorf("--%s %d: want >= 1", n.flag, *n.from)
			}
			*n.to = *n.from
		}
	}
	if o.timeScale <= 0 {
		return simserver.Config{}, fmt.Errorf("--time-scale %v: want > 0", o.timeScale)
	}
	cfg := simserver.Config{Addr: o.listen, Profile: p, TimeScale: o.timeScale, Seed: o.seed, Models: o.models}
	if _, err := simserver.New(cfg); err != nil { // checks the combination (kv-blocks vs prefix-cache-blocks, …)
		return simserver.Config{}, err
	}
	return cfg, nil
}
