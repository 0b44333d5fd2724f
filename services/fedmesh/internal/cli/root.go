// Package cli holds the fedmesh command line: dev (the whole mesh in one
// process), infer, candidates, stats, nodes and top (the TUI).
package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// globals are the flags every command shares.
type globals struct {
	natsURL string
	prefix  string
	timeout time.Duration
	// conn holds --creds, --nkey, --tls-ca, --tls-cert, --tls-key (the
	// service commands' flags, DESIGN §16); inbox is --inbox-prefix.
	conn  servicecmd.Common
	inbox string
}

func (g *globals) subjects() subject.Space { return subject.Space{Prefix: g.prefix} }

// identity is who --creds says the user is (auth.ReadIdentity); the zero
// Identity without --creds or for a file fedmesh did not issue.
func (g *globals) identity() auth.Identity {
	if g.conn.Creds == "" {
		return auth.Identity{}
	}
	id, err := auth.ReadIdentity(g.conn.Creds)
	if err != nil {
		return auth.Identity{} // connecting reports the file's problem
	}
	return id
}

// connOptions are the credential, TLS and inbox options of the flags: the
// inbox prefix is --inbox-prefix, else the one the credential's role may
// read (a client of tenant T: _INBOX.T).
func (g *globals) connOptions() ([]nats.Option, error) {
	opts, err := g.conn.ConnOptions()
	if err != nil {
		return nil, err
	}
	inbox := g.inbox
	if inbox == "" {
		inbox = g.identity().Inbox()
	}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	return opts, nil
}

func (g *globals) connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	own, err := g.connOptions()
	if err != nil {
		return nil, err
	}
	all := append([]nats.Option{nats.Name(name), nats.Timeout(3 * time.Second)}, own...)
	nc, err := nats.Connect(g.natsURL, append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (is `make run` / `fedmesh dev` running?): %w", servicecmd.Redact(g.natsURL), err)
	}
	return nc, nil
}

// envOr is the FEDMESH_<NAME> variable of a flag, or def.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(servicecmd.EnvPrefix + name); ok {
		return v
	}
	return def
}

// withConn runs one exchange of a command: a connection named name, and a
// context bounded by --timeout.
func (g *globals) withConn(cmd *cobra.Command, name string, exchange func(ctx context.Context, nc *nats.Conn) error) error {
	nc, err := g.connect(name)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	return exchange(ctx, nc)
}

// NewRoot builds the fedmesh command tree.
func NewRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "fedmesh",
		Short:         "fedmesh: a federation gateway for ML inference on NATS",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	defURL := os.Getenv(servicecmd.EnvNatsURL)
	if defURL == "" {
		defURL = nats.DefaultURL
	}
	root.PersistentFlags().StringVar(&g.natsURL, "nats-url", defURL, "NATS server URL (env "+servicecmd.EnvNatsURL+")")
	root.PersistentFlags().StringVar(&g.prefix, "prefix", subject.DefaultPrefix, "subject prefix")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 30*time.Second, "request deadline")
	pf := root.PersistentFlags()
	pf.StringVar(&g.conn.Creds, "creds", envOr("CREDS", ""), "NATS credentials file (fedmesh auth issue) (env "+servicecmd.EnvPrefix+"CREDS)")
	pf.StringVar(&g.conn.NKey, "nkey", envOr("NKEY", ""), "NATS nkey seed file, instead of --creds (env "+servicecmd.EnvPrefix+"NKEY)")
	pf.StringVar(&g.conn.TLSCA, "tls-ca", envOr("TLS_CA", ""), "CA certificate(s) to trust for the NATS connection (PEM) (env "+servicecmd.EnvPrefix+"TLS_CA)")
	pf.StringVar(&g.conn.TLSCert, "tls-cert", envOr("TLS_CERT", ""), "client certificate for mutual TLS (PEM; with --tls-key) (env "+servicecmd.EnvPrefix+"TLS_CERT)")
	pf.StringVar(&g.conn.TLSKey, "tls-key", envOr("TLS_KEY", ""), "client key for mutual TLS (PEM; with --tls-cert) (env "+servicecmd.EnvPrefix+"TLS_KEY)")
	pf.StringVar(&g.inbox, "inbox-prefix", envOr("INBOX_PREFIX", ""),
		"inbox prefix of the connection (default: the one the --creds role may read, _INBOX.<tenant> for a client) (env "+servicecmd.EnvPrefix+"INBOX_PREFIX)")
	root.AddCommand(newDevCmd(g), newInferCmd(g), newCandidatesCmd(g), newStatsCmd(g), newNodesCmd(g), newTopCmd(g), newBenchCmd(), newBenchSideCmd(), newChaosCmd(), newSimserverCmd())
	root.AddCommand(newConfigCmds(g)...)
	root.AddCommand(newAuthCmd(g))
	root.AddCommand(newBenchRoutingCmd())
	return root
}
