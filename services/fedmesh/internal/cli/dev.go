package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/logging"
	"github.com/fedmesh/fedmesh/shared/metrics"
	"github.com/fedmesh/fedmesh/shared/natsembed"
	"github.com/fedmesh/fedmesh/shared/tracing"
)

// DevAPIKey is the gateway key `fedmesh dev` accepts (tenant "dev").
const DevAPIKey = "fedmesh-dev-key"

func newDevCmd(g *globals) *cobra.Command {
	var listen, storeDir, httpAddr, logFormat, logLevel, region, metricsListen string
	var noNodes, noGateway, serverLogs, sim bool
	var secure string
	var simSeed uint64
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run the whole mesh in one process: embedded nats-server, catalog, health, router, 3 demo nodes, gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.New(os.Stderr, logFormat, logLevel)
			// OTLP spans of every part when OTEL_EXPORTER_OTLP_ENDPOINT is set (DESIGN §13)
			endTracing, err := tracing.Setup(cmd.Context(), "fedmesh-dev")
			if err != nil {
				return err
			}
			defer func() { _ = endTracing(context.Background()) }()
			host, portStr, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: want host:port: %w", listen, err)
			}
			port, err := strconv.Atoi(portStr)
			if err != nil {
				return fmt.Errorf("--listen %q: bad port: %w", listen, err)
			}
			if storeDir == "" {
				if storeDir, err = os.MkdirTemp("", "fedmesh-dev-*"); err != nil {
					return fmt.Errorf("JetStream temp dir: %w", err)
				}
				defer os.RemoveAll(storeDir)
			}
			var authDir *auth.Dir
			sopts := natsembed.Options{Host: host, Port: port, StoreDir: storeDir, Logs: serverLogs}
			if secure != "" {
				// operator mode: every part on its own credential (DESIGN §13)
				created, err := auth.Init(secure, g.prefix)
				if err != nil {
					return err
				}
				if !created {
					// a dir of an older fedmesh: this server runs its
					// server.conf, so bring the role permissions up to date
					changed, err := auth.Upgrade(secure)
					if err != nil {
						return err
					}
					if len(changed) > 0 {
						log.Info().Str("dir", secure).Strs("keys", changed).
							Msg("auth dir made by an older fedmesh: role permissions updated (account re-signed, keys kept)")
					}
				}
				if authDir, err = auth.Open(secure); err != nil {
					return err
				}
				sopts.ConfigFile = filepath.Join(secure, "server.conf")
			}
			srv, err := natsembed.Start(sopts)
			if err != nil {
				return err
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

			opts := devmesh.Options{Server: srv, Subjects: g.subjects(), Log: log, MetricsListen: metricsListen}
			if authDir != nil {
				if err := devmesh.SetupSecured(cmd.Context(), srv, authDir, secure, devTenant, buckets.Options{}); err != nil {
					return err
				}
				opts.Credentials = devmesh.Credentials(authDir)
			}
			if region != "" {
				opts.Router = devRouterRegion(region)
			}
			switch {
			case noNodes:
			case sim:
				nodes, servers, err := devmesh.SimDemoNodes(cmd.Context(), simSeed, log)
				if err != nil {
					return err
				}
				// deferred before mesh.Stop, so it runs after: the nodes drain first
				defer func() { _ = devmesh.StopSimServers(servers) }()
				for i, s := range servers {
					log.Info().Str("node", nodes[i].NodeID).Str("profile", s.Profile().Name).
						Str("metrics", s.URL()+"/metrics").Msg("simulated vLLM server")
				}
				opts.Nodes = nodes
			default:
				opts.Nodes = devmesh.DemoNodes()
			}
			if !noGateway {
				gc := gateway.DefaultConfig()
				gc.Addr = httpAddr
				gc.Keys = devKeys()
				opts.Gateway = &gc
			}
			mesh, err := devmesh.Start(cmd.Context(), opts)
			if err != nil {
				return err
			}
			defer mesh.Stop()
			ev := log.Info().Str("nats", srv.ClientURL()).Str("jetstream", storeDir).Int("nodes", len(opts.Nodes))
			if mesh.Gateway != nil {
				ev = ev.Str("http", "http://"+mesh.Gateway.Addr()).Str("api_key", DevAPIKey)
			}
			if u := mesh.MetricsURL(); u != "" {
				ev = ev.Str("metrics", u)
			}
			if secure != "" {
				ev = ev.Str("client_creds", filepath.Join(secure, "dev-client.creds")).Str("operator_creds", filepath.Join(secure, "operator.creds"))
				ev.Msg("fedmesh dev is up, secured — try: nats --creds " + filepath.Join(secure, "dev-client.creds") +
					" --inbox-prefix _INBOX." + devTenant + " req fed.infer.generate." + devTenant + " hello   (Ctrl-C to stop)")
			} else {
				ev.Msg("fedmesh dev is up — try: nats req fed.infer.generate hello   (Ctrl-C to stop)")
			}
			<-cmd.Context().Done()
			log.Info().Msg("shutting down: draining nodes, then services")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:4222", "host:port of the embedded nats-server")
	f.StringVar(&storeDir, "store-dir", "", "JetStream data directory (default: a temp dir removed at exit)")
	f.StringVar(&httpAddr, "http", "127.0.0.1:8080", "address of the OpenAI-compatible gateway")
	f.StringVar(&metricsListen, "metrics-listen", metrics.DevListen, "serve every part's Prometheus /metrics on this host:port; off or empty: not served")
	f.StringVar(&logFormat, "log-format", logging.FormatConsole, "console or json")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn, error")
	f.StringVar(&region, "router-region", "", "the router's own region (locality default)")
	f.BoolVar(&noNodes, "no-demo-nodes", false, "start no demo nodes (bring your own node agents)")
	f.BoolVar(&noGateway, "no-gateway", false, "do not start the HTTP gateway")
	f.BoolVar(&serverLogs, "server-logs", false, "show the nats-server's own log lines")
	f.StringVar(&secure, "secure", "", "run in operator mode from this auth dir (made with fedmesh auth init when empty): every part on its own credential; writes DIR/dev-client.creds (tenant dev) and DIR/operator.creds")
	f.BoolVar(&sim, "sim", true, "run the demo nodes on simulated vLLM servers (fedmesh simserver: h100, a10, cpu); --sim=false: synthetic backends")
	f.Uint64Var(&simSeed, "sim-seed", 0, "seed of the simulated servers' answers (with --sim)")
	return cmd
}
