package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/fedmesh/fedmesh/services/fedmesh/internal/auth"
	"github.com/fedmesh/fedmesh/services/fedmesh/internal/devmesh"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// benchTenant is the secured bench client's tenant.
const benchTenant = "bench"

// newSecureRig is newRig in operator mode (DESIGN §16): every part on its
// own credential, the client on a tenant credential.
func newSecureRig(ctx context.Context) (*rig, error) {
	dir, err := os.MkdirTemp("", "fedmesh-bench-secure-*")
	if err != nil {
		return nil, err
	}
	r := &rig{dir: dir, authDir: filepath.Join(dir, "auth")}
	if err := r.startSecure(ctx); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *rig) startSecure(ctx context.Context) error {
	if _, err := auth.Init(r.authDir, ""); err != nil {
		return err
	}
	d, err := auth.Open(r.authDir)
	if err != nil {
		return err
	}
	if r.srv, err = natsembed.Start(natsembed.Options{Port: -1, StoreDir: filepath.Join(r.dir, "js"), Name: "fedmesh-bench-secure",
		ConfigFile: filepath.Join(r.authDir, "server.conf")}); err != nil {
		return err
	}
	if err := devmesh.SetupSecured(ctx, r.srv, d, r.authDir, benchTenant, buckets.Options{}); err != nil {
		return err
	}
	if r.mesh, err = devmesh.Start(ctx, devmesh.Options{Server: r.srv, Log: zerolog.Nop(), Nodes: benchNodes(0),
		Credentials: devmesh.Credentials(d)}); err != nil {
		return err
	}
	return nil
}

// secureSession is a tenant client of the secured rig.
func (r *rig) secureSession() (*session, error) {
	nc, err := nats.Connect(r.srv.ClientURL(), nats.Name("bench-client"),
		nats.UserCredentials(filepath.Join(r.authDir, "dev-client.creds")), nats.CustomInboxPrefix("_INBOX."+benchTenant))
	if err != nil {
		return nil, fmt.Errorf("bench: connect secured client: %w", err)
	}
	c, err := client.New(nc, client.WithTenant(benchTenant))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &session{nc: nc, c: c}, nil
}

// secureTable measures request-reply latency through the open mesh and the
// secured one, interleaved in blocks so both see the same machine noise.
func (r *rig) secureTable(ctx context.Context, w io.Writer, n int) error {
	sr, err := newSecureRig(ctx)
	if err != nil {
		return fmt.Errorf("bench: secured mesh: %w", err)
	}
	defer sr.close()
	open, err := r.session()
	if err != nil {
		return err
	}
	defer open.close()
	sec, err := sr.secureSession()
	if err != nil {
		return err
	}
	defer sec.close()
	lat, err := latency(ctx, [2]side{requestSide{"open", open.request(ctx, sideRouted)}, requestSide{"secured", sec.request(ctx, sideRouted)}}, n)
	if err != nil {
		return err
	}
	op, se := lat.raw, lat.mesh
	fmt.Fprintf(w, "### Secured (operator mode, a credential per part) vs open, request-reply\n\n")
	fmt.Fprintf(w, "| measure | open | secured | ratio (secured/open) | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| p50 latency, 1 client (%d req) | %.1f µs | %.1f µs | %.2f× | ≤ 1.10× |\n", n, us(op.p50), us(se.p50), ratio(se.p50, op.p50))
	fmt.Fprintf(w, "| p99 latency, 1 client | %.1f µs | %.1f µs | %.2f× | |\n\n", us(op.p99), us(se.p99), ratio(se.p99, op.p99))
	return nil
}
