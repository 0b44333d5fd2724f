// Command gateway runs fedmesh's OpenAI-compatible HTTP gateway.
package main

import (
	"flag"
	"fmt"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/servicecmd"
)

func main() {
	o := options{cfg: gateway.DefaultConfig()}
	servicecmd.Main(o.command())
}

// options are the gateway's own flags (each also FEDMESH_<FLAG>: the keys
// flags are FEDMESH_API_KEYS_FILE and FEDMESH_API_KEYS).
type options struct {
	cfg      gateway.Config
	keysFile string // --api-keys-file
	keys     string // --api-keys
}

func (o *options) command() servicecmd.Command {
	return servicecmd.Command{
		Name: "gateway",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.cfg.Addr, "addr", o.cfg.Addr, "HTTP listen address")
			fs.DurationVar(&o.cfg.Timeout, "timeout", o.cfg.Timeout, "end-to-end request timeout")
			fs.Int64Var(&o.cfg.MaxBodyBytes, "max-body-bytes", o.cfg.MaxBodyBytes, "largest request body (413 over it)")
			fs.DurationVar(&o.cfg.ReadHeaderTimeout, "read-header-timeout", o.cfg.ReadHeaderTimeout,
				"longest a client may take to send a request's headers (then the connection is closed)")
			fs.DurationVar(&o.cfg.ReadTimeout, "read-timeout", o.cfg.ReadTimeout,
				"longest a client may take to send a whole request, headers and body (408 when the body is late)")
			fs.DurationVar(&o.cfg.WriteTimeout, "write-timeout", o.cfg.WriteTimeout,
				"longest one write to the client (an answer, or one SSE event) may take; streams may last longer")
			fs.DurationVar(&o.cfg.IdleTimeout, "idle-timeout", o.cfg.IdleTimeout, "how long an idle keep-alive connection stays open")
			fs.IntVar(&o.cfg.MaxHeaderBytes, "max-header-bytes", o.cfg.MaxHeaderBytes, "largest request headers (431 over it)")
			fs.IntVar(&o.cfg.MaxConcurrent, "max-concurrent", o.cfg.MaxConcurrent,
				"requests a tenant may have in flight when its keys do not set max_concurrent (429 over it)")
			fs.StringVar(&o.keysFile, "api-keys-file", "", "API keys file, YAML or JSON")
			fs.StringVar(&o.keys, "api-keys", "", "more API keys: a keys document in JSON, or key1=tenant1,key2=tenant2")
		},
		Build: func(env servicecmd.Env) (servicecmd.Service, error) {
			keys, err := loadKeys(o.keysFile, o.keys)
			if err != nil {
				return nil, err
			}
			if len(keys) == 0 {
				env.Log.Warn().Msg("no API keys configured (--api-keys-file or --api-keys): every /v1 request gets 401")
			}
			o.cfg.Keys = keys
			o.cfg.Subjects.Prefix = env.Common.Prefix
			return gateway.New(env.NC, o.cfg, env.Log)
		},
	}
}

// loadKeys merges the keys file and the inline keys; a key in both is an error.
func loadKeys(path, inline string) (map[string]gateway.Tenant, error) {
	keys := map[string]gateway.Tenant{}
	if path != "" {
		k, err := gateway.LoadKeys(path)
		if err != nil {
			return nil, err
		}
		keys = k
	}
	if inline == "" {
		return keys, nil
	}
	extra, err := gateway.ParseKeysEnv(inline)
	if err != nil {
		return nil, err
	}
	for k, t := range extra {
		if _, dup := keys[k]; dup {
			return nil, fmt.Errorf("--api-keys (FEDMESH_API_KEYS) repeats a key of the keys file %s", path)
		}
		keys[k] = t
	}
	return keys, nil
}
