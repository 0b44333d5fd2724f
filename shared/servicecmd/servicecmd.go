// Package servicecmd holds what every fedmesh service command shares: the
// common flags, connecting to NATS, and running a service until SIGINT or
// SIGTERM, then stopping it and draining the connection.
package servicecmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/shared/logging"
)

// EnvNatsURL overrides the default of --nats-url.
const EnvNatsURL = "FEDMESH_NATS_URL"

// Common are the flags every service command takes.
type Common struct {
	NatsURL   string
	LogFormat string
	LogLevel  string
	Prefix    string
}

// Register adds --nats-url, --log-format, --log-level and --prefix to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	url := os.Getenv(EnvNatsURL)
	if url == "" {
		url = nats.DefaultURL
	}
	fs.StringVar(&c.NatsURL, "nats-url", url, "NATS server URL (env "+EnvNatsURL+")")
	fs.StringVar(&c.LogFormat, "log-format", logging.FormatConsole, "log format: console|json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug|info|warn|error")
	fs.StringVar(&c.Prefix, "prefix", "", "subject prefix (default fed)")
}

// Service is what Run runs: every fedmesh service has this shape.
type Service interface {
	Start(ctx context.Context) error
	Stop() error
}

// Run connects as "fed-<component>", builds the service, starts it and
// waits for SIGINT or SIGTERM; then it stops the service and drains the
// connection so nothing in flight is lost.
func Run(c Common, component string, build func(nc *nats.Conn, log zerolog.Logger) (Service, error)) error {
	log := logging.Component(logging.New(os.Stderr, c.LogFormat, c.LogLevel), component)
	nc, err := nats.Connect(c.NatsURL, nats.Name("fed-"+component), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("url", nc.ConnectedUrl()).Msg("reconnected to NATS") }))
	if err != nil {
		return fmt.Errorf("connect %s: %w", c.NatsURL, err)
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := build(nc, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		_ = svc.Stop()
		return err
	}
	<-ctx.Done()
	log.Info().Msg("stopping")
	errStop := svc.Stop()
	return errors.Join(errStop, drain(nc, 5*time.Second))
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
	select {
	case <-closed:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("drain NATS connection: not closed after %s", limit)
	}
}
