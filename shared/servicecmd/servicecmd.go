// Package servicecmd is the one command shell of fedmesh's service
// programs: the same common flags, every flag also settable as FEDMESH_<FLAG>
// in the environment, one way to connect (connection name
// fedmesh-<service>-<id>, URLs logged redacted), and running a service until
// SIGINT or SIGTERM, then stopping it and draining the connection.
package servicecmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/tracing"
)

// EnvPrefix starts the environment variable of every flag: --nats-url is
// FEDMESH_NATS_URL, --max-in-flight FEDMESH_MAX_IN_FLIGHT. A flag on the
// command line wins over its variable.
const EnvPrefix = "FEDMESH_"

// EnvNatsURL is the variable of --nats-url.
const EnvNatsURL = EnvPrefix + "NATS_URL"

// drainTimeout bounds how long a stopping command drains its connection.
const drainTimeout = 5 * time.Second

// Service is what every fedmesh service is: Start brings it up (all or
// nothing), Stop is idempotent and safe after a failed Start.
type Service interface {
	Start(ctx context.Context) error
	Stop() error
}

// Common are the flags every service command takes.
type Common struct {
	NatsURL   string
	LogFormat string
	LogLevel  string
	Prefix    string
	// MetricsListen is where Prometheus /metrics is served (host:port);
	// "" or "off": nowhere.
	MetricsListen string
	// Credentials and TLS (DESIGN §13): a .creds file (user JWT + seed,
	// from `fedmesh auth issue`), or an nkey seed file; a CA to trust, and a
	// client certificate and key for mutual TLS.
	Creds, NKey, TLSCA, TLSCert, TLSKey string
}

// ConnOptions are the NATS options the credential and TLS flags ask for.
func (c *Common) ConnOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.Creds != "" && c.NKey != "":
		return nil, errors.New("--creds and --nkey: give one")
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NKey != "":
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nkey %s: %w", c.NKey, err)
		}
		opts = append(opts, o)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// Register adds --nats-url, --log-format, --log-level, --prefix and
// --metrics-listen to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.NatsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated")
	fs.StringVar(&c.LogFormat, "log-format", logging.FormatConsole, "log format: console|json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug|info|warn|error")
	fs.StringVar(&c.Prefix, "prefix", "", "subject prefix (default fed)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on this host:port (e.g. 127.0.0.1:9464); empty or off: not served")
	fs.StringVar(&c.Creds, "creds", "", "NATS credentials file (fedmesh auth issue)")
	fs.StringVar(&c.NKey, "nkey", "", "NATS nkey seed file (instead of --creds)")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "CA certificate(s) to trust for the NATS connection (PEM)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "client certificate for mutual TLS (PEM; with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "client key for mutual TLS (PEM; with --tls-cert)")
}

// Command is one service program.
type Command struct {
	// Name is the service: the logs' component and the middle of the
	// connection name fedmesh-<name>-<id>.
	Name string
	// Flags adds the service's own flags to fs; nil when it has none.
	Flags func(fs *flag.FlagSet)
	// ID names this instance once flags are parsed (a node id, say); nil or
	// "" gives a new unique id.
	ID func() string
	// Prepare, when set, runs once flags and environment are parsed and
	// before anything connects: it loads and checks the service's own
	// settings (a config file, say) and may fill common settings the user
	// did not give (given reports whether a flag was set by the environment
	// or the arguments). Its error is a usage error: exit 2, nothing
	// connected.
	Prepare func(common *Common, given func(flag string) bool) error
	// Build makes the service on a live connection.
	Build func(env Env) (Service, error)
}

// Env is what Build gets.
type Env struct {
	NC     *nats.Conn
	Log    zerolog.Logger
	Common Common
	// ID is the instance id the connection is named after.
	ID string
}

// Main runs c with the process's arguments and environment and exits: 0
// after a clean stop, 2 for bad flags, 1 for any other error.
func Main(c Command) {
	os.Exit(ExitCode(Run(context.Background(), c, os.Args[1:], os.LookupEnv, os.Stderr)))
}

// ExitCode is the process exit code for Run's result: 0 for nil or --help,
// 2 for a usage error (bad flag, variable or setting), 1 otherwise. Run
// has already printed the error.
func ExitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	default:
		return 1
	}
}

// ErrUsage marks errors in the flags, variables or settings a command was given.
var ErrUsage = errors.New("usage")

// Parse builds c's flag set, applies FEDMESH_* variables from lookup, then
// args. It returns the common flags; the service's own land where c.Flags
// put them.
func Parse(c Command, args []string, lookup func(string) (string, bool), stderr io.Writer) (Common, error) {
	var common Common
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	common.Register(fs)
	if c.Flags != nil {
		c.Flags(fs)
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		f.Usage += " (env " + name + ")"
		if v, ok := lookup(name); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%w: %s=%q: %v", ErrUsage, name, v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintln(stderr, envErr)
		return common, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return common, err
		}
		return common, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
		fmt.Fprintln(stderr, err)
		return common, err
	}
	if c.Prepare != nil {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		if err := c.Prepare(&common, func(name string) bool { return given[name] }); err != nil {
			err = fmt.Errorf("%w: %s: %w", ErrUsage, c.Name, err)
			fmt.Fprintln(stderr, err)
			return common, err
		}
	}
	return common, nil
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Run parses flags, connects, builds and starts the service, and waits
// until ctx ends or SIGINT/SIGTERM arrives; then it stops the service and
// drains the connection so nothing in flight is lost. With
// --metrics-listen it binds that address before connecting (a taken port
// fails at once) and serves the service's metrics (metrics.Source) once it
// has started, until it has stopped.
func Run(ctx context.Context, c Command, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
	common, err := Parse(c, args, lookup, stderr)
	if err != nil {
		return err
	}
	id := ""
	if c.ID != nil {
		id = c.ID()
	}
	if id == "" {
		id = nuid.Next()
	}
	log := logging.Component(logging.New(stderr, common.LogFormat, common.LogLevel), c.Name).
		With().Str(logging.KeyInstance, id).Logger()
	var msrv *metrics.Server
	if metrics.Enabled(common.MetricsListen) {
		if msrv, err = metrics.Listen(ctx, common.MetricsListen); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
			return err
		}
		defer closeMetrics(msrv, log) // last: a scrape still sees the final counts while stopping
	}
	// spans go out over OTLP only when the standard OTEL_EXPORTER_OTLP_*
	// environment names an endpoint (DESIGN §13)
	endTracing, err := tracing.Setup(ctx, "fedmesh-"+c.Name)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return err
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		defer cancel()
		_ = endTracing(tctx) // flushes the last spans
	}()
	opts, err := common.ConnOptions()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return err
	}
	inbox, err := common.InboxPrefixFor(c.Name, id)
	if err != nil {
		err = fmt.Errorf("%w: %s: %w", ErrUsage, c.Name, err)
		fmt.Fprintln(stderr, err)
		return err
	}
	opts = append(opts, nats.CustomInboxPrefix(inbox))
	nc, err := Connect(common.NatsURL, ConnName(c.Name, id), log, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return err
	}
	defer nc.Close()

	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := c.Build(Env{NC: nc, Log: log, Common: common, ID: id})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return err
	}
	if err := svc.Start(sigCtx); err != nil {
		err = errors.Join(err, svc.Stop())
		if sigCtx.Err() != nil && ctx.Err() == nil {
			// a signal while still starting (waiting for a catalog, say): a clean stop
			log.Info().Msg("stopped before it was ready")
			return nil
		}
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return err
	}
	ev := log.Info().Str("nats", Redact(common.NatsURL))
	if msrv != nil {
		reg, err := metrics.ForService(c.Name, id, svc)
		if err != nil {
			err = errors.Join(err, svc.Stop())
			fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
			return err
		}
		msrv.Serve(reg)
		ev = ev.Str("metrics", msrv.URL())
	}
	ev.Msg("started")
	<-sigCtx.Done()
	stop() // a second signal ends the process the default way
	log.Info().Msg("stopping")
	err = errors.Join(svc.Stop(), drain(nc, drainTimeout))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
	}
	return err
}

func closeMetrics(s *metrics.Server, log zerolog.Logger) {
	if err := s.Close(); err != nil {
		log.Warn().Err(err).Msg("metrics listener")
	}
}

// ConnName is the NATS connection name of one instance of a service, as
// `nats server report connections` shows it.
func ConnName(service, id string) string { return "fedmesh-" + service + "-" + id }

// Connect opens a connection that reconnects forever and logs its
// disconnects and reconnects; errors and logs show the URL redacted.
func Connect(urls, name string, log zerolog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", Redact(nc.ConnectedUrl())).Msg("reconnected to NATS")
		}),
		// async errors (a permission violation in secured mode, a slow
		// consumer) are otherwise silent
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str(logging.KeySubject, sub.Subject)
			}
			ev.Msg("nats async error")
		})}, opts...)
	nc, err := nats.Connect(urls, all...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", Redact(urls), err)
	}
	return nc, nil
}

// Redact hides the password (or token) of every URL in a comma-separated
// NATS URL list.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		parts[i] = p
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			if strings.Contains(p, "@") { // unparsable but carries credentials
				parts[i] = "redacted"
			}
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		} else {
			u.User = url.User("redacted") // a bare user part is a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// drain drains nc and waits for it to close, up to limit.
func drain(nc *nats.Conn, limit time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-closed:
		return nil
	case <-t.C:
		return fmt.Errorf("drain NATS connection: not closed after %s", limit)
	}
}
