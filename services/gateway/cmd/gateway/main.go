// Command gateway runs fedmesh's OpenAI-compatible HTTP gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/logging"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := gateway.DefaultConfig()
	url := os.Getenv("FEDMESH_NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	natsURL := flag.String("nats-url", url, "NATS server URL (env FEDMESH_NATS_URL)")
	format := flag.String("log-format", logging.FormatConsole, "log format: console|json")
	level := flag.String("log-level", "info", "log level: debug|info|warn|error")
	prefix := flag.String("prefix", "", "subject prefix (default fed)")
	keysFile := flag.String("keys", os.Getenv("FEDMESH_API_KEYS_FILE"), "API keys file, YAML or JSON (env FEDMESH_API_KEYS_FILE); env FEDMESH_API_KEYS adds keys")
	flag.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTP listen address")
	flag.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "end-to-end request timeout")
	flag.Parse()
	cfg.Subjects.Prefix = *prefix

	keys, err := loadKeys(*keysFile, os.Getenv("FEDMESH_API_KEYS"))
	if err != nil {
		return err
	}
	cfg.Keys = keys

	log := logging.Component(logging.New(os.Stderr, *format, *level), "gateway")
	if len(keys) == 0 {
		log.Warn().Msg("no API keys configured (--keys or FEDMESH_API_KEYS): every /v1 request gets 401")
	}
	nc, err := nats.Connect(*natsURL, nats.Name("fed-gateway"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect %s: %w", *natsURL, err)
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := gateway.New(nc, cfg, log)
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info().Msg("gateway stopping")
	return svc.Stop()
}

// loadKeys merges the keys file and FEDMESH_API_KEYS; a key in both is an error.
func loadKeys(path, env string) (map[string]gateway.Tenant, error) {
	keys := map[string]gateway.Tenant{}
	if path != "" {
		k, err := gateway.LoadKeys(path)
		if err != nil {
			return nil, err
		}
		keys = k
	}
	if env == "" {
		return keys, nil
	}
	extra, err := gateway.ParseKeysEnv(env)
	if err != nil {
		return nil, err
	}
	for k, t := range extra {
		if _, dup := keys[k]; dup {
			return nil, errors.New("FEDMESH_API_KEYS repeats a key of the keys file")
		}
		keys[k] = t
	}
	return keys, nil
}
