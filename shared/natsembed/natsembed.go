// Package natsembed runs a real nats-server with JetStream inside the
// process: `fedmesh dev` uses it, and so does every integration test. It is a
// module of its own so the services' modules do not depend on nats-server.
package natsembed

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure an embedded server.
type Options struct {
	Host     string // default 127.0.0.1
	Port     int    // 0: nats default 4222; -1: a random free port
	StoreDir string // JetStream storage; required
	Name     string // server name; default "fedmesh-dev"
	// Logs turns on the server's own log lines (to stderr).
	Logs bool
	// MaxPayload in bytes; 0 keeps the server default (1 MiB).
	MaxPayload int32
	// ConfigFile is a nats-server config read first (operator mode: the
	// server.conf of `fedmesh auth init`); the fields above then apply.
	ConfigFile string
}

// Start runs a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("natsembed: StoreDir is required for JetStream")
	}
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	name := o.Name
	if name == "" {
		name = "fedmesh-dev"
	}
	opts := &server.Options{}
	if o.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(o.ConfigFile); err != nil {
			return nil, fmt.Errorf("natsembed: nats-server config %s: %w", o.ConfigFile, err)
		}
	}
	opts.ServerName, opts.Host, opts.Port = name, host, o.Port
	opts.JetStream, opts.StoreDir, opts.NoSigs, opts.NoLog = true, o.StoreDir, true, !o.Logs
	if o.MaxPayload != 0 {
		opts.MaxPayload = o.MaxPayload
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: new server on %s:%d: %w", host, o.Port, err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s:%d not ready after 10s (port in use?)", host, o.Port)
	}
	return s, nil
}

// ConnectInProcess connects to s without a socket: a round trip costs
// microseconds instead of a loopback hop. Services inside `fedmesh dev` use it.
func ConnectInProcess(s *server.Server, name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(s), nats.Name(name), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("natsembed: in-process connection %s: %w", name, err)
	}
	return nc, nil
}
