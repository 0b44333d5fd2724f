// Command gateway runs fedmesh's OpenAI-compatible HTTP gateway.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := gateway.DefaultConfig()
	var common servicecmd.Common
	common.Register(flag.CommandLine)
	keysFile := flag.String("keys", os.Getenv("FEDMESH_API_KEYS_FILE"), "API keys file, YAML or JSON (env FEDMESH_API_KEYS_FILE); env FEDMESH_API_KEYS adds keys")
	flag.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTP listen address")
	flag.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "end-to-end request timeout")
	flag.Parse()
	cfg.Subjects.Prefix = common.Prefix

	keys, err := loadKeys(*keysFile, os.Getenv("FEDMESH_API_KEYS"))
	if err != nil {
		return err
	}
	cfg.Keys = keys
	return servicecmd.Run(common, "gateway", func(nc *nats.Conn, log zerolog.Logger) (servicecmd.Service, error) {
		if len(keys) == 0 {
			log.Warn().Msg("no API keys configured (--keys or FEDMESH_API_KEYS): every /v1 request gets 401")
		}
		return gateway.New(nc, cfg, log)
	})
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
