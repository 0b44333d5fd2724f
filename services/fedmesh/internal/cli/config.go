package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/fedmesh/fedmesh/services/router/router"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/record"
)

// Exit codes. Every command exits 1 on an error; the config commands also
// tell a value routers reject, an unset key and a lost write race apart, so
// scripts can act on them.
const (
	ExitError    = 1 // the command could not run: connection, bucket, unreadable file
	ExitInvalid  = 2 // the value is one routers reject (validate, set, get of a stored value)
	ExitUnset    = 3 // get: the key holds no value; the defaults were printed
	ExitConflict = 4 // set: someone else wrote the key after it was read; nothing written
)

// exitError is an error with its process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process exit code for what a command returned: 0 for nil,
// the code it carries, else ExitError.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitError
}

// maxConfigBytes bounds what set and validate read: fed_config values are
// small, and a KV value cannot exceed the server's max_payload anyway.
const maxConfigBytes = 1 << 20

// configKey is one fed_config key the CLI reads, checks and writes
// (DESIGN §5.3), with the router's own decoder.
type configKey struct {
	use   string // command name
	key   string // fed_config key
	short string
	// decode is the router's decoder: what it refuses, routers refuse.
	decode func([]byte) error
	// defaults is what routers use while the key is unset; unset says so.
	defaults any
	unset    string
}

// configKeys are the three fed_config keys. The policy is checked on the
// default base (record.DefaultPolicy): a router started with another
// --strategy or --max-queue-ms keeps its own value for fields the JSON
// leaves out, which never makes a valid value invalid.
var configKeys = []configKey{
	{use: "policy", key: record.ConfigKeyPolicy, short: "the routing policy (fed_config router.policy)",
		decode:   func(b []byte) error { _, err := router.DecodePolicy(record.Policy{}, b); return err },
		defaults: record.DefaultPolicy(),
		unset:    "routers use their base policy: these defaults, unless a router was started with --strategy or --max-queue-ms"},
	{use: "regions", key: record.ConfigKeyRegions, short: "per-region privacy caps and costs (fed_config regions)",
		decode:   func(b []byte) error { _, err := router.DecodeRegions(b); return err },
		defaults: record.Regions{},
		unset:    "no region caps a node's clearance or sets a cost (nodes registered with cost 0 cost 0.5)"},
	{use: "tenants", key: record.ConfigKeyTenants, short: "per-tenant request limits (fed_config tenants)",
		decode:   func(b []byte) error { _, err := router.DecodeTenants(b); return err },
		defaults: record.Tenants{},
		unset:    "routers limit no tenant"},
}

// newConfigCmds builds policy, regions and tenants, each with get, set and
// validate.
func newConfigCmds(g *globals) []*cobra.Command {
	cmds := make([]*cobra.Command, 0, len(configKeys))
	for _, ck := range configKeys {
		cmd := &cobra.Command{Use: ck.use, Short: "get, set or validate " + ck.short, Args: cobra.NoArgs}
		cmd.AddCommand(
			&cobra.Command{
				Use:   "get",
				Short: "print " + ck.key + " as stored (JSON on stdout, its revision on stderr)",
				Args:  cobra.NoArgs,
				RunE: func(cmd *cobra.Command, _ []string) error {
					return g.withConfig(cmd, ck.use, func(ctx context.Context, kv jetstream.KeyValue) error {
						return ck.get(ctx, kv, cmd.OutOrStdout(), cmd.ErrOrStderr())
					})
				},
			},
			&cobra.Command{
				Use:   "set FILE|-",
				Short: "check a new " + ck.key + " as routers do, show the change and write it if nobody wrote in between",
				Args:  cobra.ExactArgs(1),
				RunE: func(cmd *cobra.Command, args []string) error {
					data, err := ck.read(cmd, args[0])
					if err != nil {
						return err
					}
					return g.withConfig(cmd, ck.use, func(ctx context.Context, kv jetstream.KeyValue) error {
						return ck.set(ctx, kv, data, cmd.OutOrStdout())
					})
				},
			},
			&cobra.Command{
				Use:   "validate FILE|-",
				Short: "check a " + ck.key + " value as routers do (no connection needed)",
				Args:  cobra.ExactArgs(1),
				RunE: func(cmd *cobra.Command, args []string) error {
					if _, err := ck.read(cmd, args[0]); err != nil {
						return err
					}
					_, err := fmt.Fprintln(cmd.OutOrStdout(), "ok")
					return err
				},
			})
		cmds = append(cmds, cmd)
	}
	return cmds
}

// read reads FILE (or standard input for "-") and checks it with the
// router's decoder; the value comes back compacted, ready to store.
func (ck *configKey) read(cmd *cobra.Command, name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r, name = cmd.InOrStdin(), "standard input"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxConfigBytes {
		return nil, &exitError{ExitInvalid, fmt.Errorf("%s: %s value is over %d bytes", name, ck.key, maxConfigBytes)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &exitError{ExitInvalid, fmt.Errorf("%s: empty; a %s value is a JSON object", name, ck.key)}
	}
	if err := ck.decode(data); err != nil {
		return nil, &exitError{ExitInvalid, fmt.Errorf("%s: routers would reject it: %w", name, err)}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil { // unreachable: the decoder parsed it
		return nil, &exitError{ExitInvalid, fmt.Errorf("%s: %w", name, err)}
	}
	return buf.Bytes(), nil
}

// withConfig runs one exchange of a config command with fed_config open.
func (g *globals) withConfig(cmd *cobra.Command, use string, exchange func(ctx context.Context, kv jetstream.KeyValue) error) error {
	return g.withConn(cmd, "fedmesh-"+use, func(ctx context.Context, nc *nats.Conn) error {
		kv, err := openConfig(ctx, nc)
		if err != nil {
			return err
		}
		return exchange(ctx, kv)
	})
}

// openConfig opens fed_config without creating it: the services create it
// with the replicas they are configured for.
func openConfig(ctx context.Context, nc *nats.Conn) (jetstream.KeyValue, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream on %s: %w", nc.ConnectedUrlRedacted(), err)
	}
	kv, err := js.KeyValue(ctx, buckets.Config)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s does not exist on %s: start the mesh first (router, catalog or health create it): %w",
			buckets.Config, nc.ConnectedUrlRedacted(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", buckets.Config, err)
	}
	return kv, nil
}

// current is the key's stored entry, nil when unset (never written, or
// deleted: routers then use their defaults).
func (ck *configKey) current(ctx context.Context, kv jetstream.KeyValue) (jetstream.KeyValueEntry, error) {
	e, err := kv.Get(ctx, ck.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", buckets.Config, ck.key, err)
	}
	return e, nil
}

// get prints the stored value on out and its revision on info; unset, it
// prints the defaults routers use.
func (ck *configKey) get(ctx context.Context, kv jetstream.KeyValue, out, info io.Writer) error {
	e, err := ck.current(ctx, kv)
	if err != nil {
		return err
	}
	if e == nil {
		fmt.Fprintf(info, "%s %s is not set; printed are the defaults (not stored): %s\n", buckets.Config, ck.key, ck.unset)
		if err := printJSON(out, ck.defaults); err != nil {
			return err
		}
		return &exitError{ExitUnset, fmt.Errorf("%s %s is not set", buckets.Config, ck.key)}
	}
	fmt.Fprintf(info, "%s %s: revision %d, written %s\n", buckets.Config, ck.key, e.Revision(), e.Created().UTC().Format(time.RFC3339))
	if err := printRaw(out, e.Value()); err != nil {
		return err
	}
	if err := ck.decode(e.Value()); err != nil {
		// what routers do with it: log it and keep the last good value
		return &exitError{ExitInvalid, fmt.Errorf("%s %s revision %d is rejected by routers, which keep their last good value: %w",
			buckets.Config, ck.key, e.Revision(), err)}
	}
	return nil
}

// set writes data (already checked) over the value it read, revision-checked.
func (ck *configKey) set(ctx context.Context, kv jetstream.KeyValue, data []byte, out io.Writer) error {
	e, err := ck.current(ctx, kv)
	if err != nil {
		return err
	}
	var old []byte
	from := "unset"
	if e != nil {
		old, from = e.Value(), "revision "+strconv.FormatUint(e.Revision(), 10)
	}
	changes := fieldDiff(old, data)
	if e != nil && bytes.Equal(compactOr(old), data) {
		fmt.Fprintf(out, "%s %s: unchanged at %s; nothing written\n", buckets.Config, ck.key, from)
		return nil
	}
	fmt.Fprintf(out, "%s %s (%s):\n", buckets.Config, ck.key, from)
	if len(changes) == 0 {
		fmt.Fprintln(out, "  no field changes (formatting only)")
	}
	for _, c := range changes {
		fmt.Fprintln(out, "  "+c)
	}
	var rev uint64
	if e == nil {
		// Create also succeeds over a delete marker, and fails if anyone
		// wrote the key since we found it unset.
		rev, err = kv.Create(ctx, ck.key, data)
	} else {
		rev, err = kv.Update(ctx, ck.key, data, e.Revision())
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return &exitError{ExitConflict, fmt.Errorf("%s %s was written by someone else after %s was read; nothing written: "+
			"run `fedmesh %s get` and try again: %w", buckets.Config, ck.key, from, ck.use, err)}
	}
	if err != nil {
		return fmt.Errorf("write %s %s: %w", buckets.Config, ck.key, err)
	}
	fmt.Fprintf(out, "written: revision %d\n", rev)
	return nil
}

// printRaw pretty-prints a stored value as it is (field order and number
// spelling kept); a value that is not JSON is printed unchanged.
func printRaw(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(data), "", "  "); err != nil {
		buf.Reset()
		buf.Write(data)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// compactOr is data compacted, or data itself when it is not JSON.
func compactOr(data []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, data) != nil {
		return data
	}
	return buf.Bytes()
}

// unsetField stands for a field one side of a diff does not have.
const unsetField = "(unset)"

// fieldDiff lists the fields that differ between two fed_config values as
// "path: old → new", sorted by path; nested objects are walked
// ("weights.cost", "eu-west.privacy"). Both sides come from the bucket or a
// file: a side that is not JSON is one field, "(value)".
func fieldDiff(old, new []byte) []string {
	a, b := flatten(old), flatten(new)
	paths := make([]string, 0, len(a)+len(b))
	for p := range a {
		paths = append(paths, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		x, inA := a[p]
		y, inB := b[p]
		if inA && inB && x == y {
			continue
		}
		if !inA {
			x = unsetField
		}
		if !inB {
			y = unsetField
		}
		if p == "" {
			p = "(value)"
		}
		out = append(out, p+": "+x+" → "+y)
	}
	return out
}

// flatten maps every leaf of a JSON value to its compact JSON text; empty
// input is no fields.
func flatten(data []byte) map[string]string {
	out := map[string]string{}
	if len(bytes.TrimSpace(data)) == 0 {
		return out
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep numbers as written
	var v any
	if err := dec.Decode(&v); err != nil {
		out[""] = "not JSON " + strconv.Quote(clip(string(data), 60))
		return out
	}
	walk("", v, out)
	return out
}

func walk(path string, v any, out map[string]string) {
	m, isObject := v.(map[string]any)
	if !isObject || (len(m) == 0 && path != "") {
		out[path] = leaf(v)
		return
	}
	for k, child := range m {
		p := k
		if path != "" {
			p = path + "." + k
		}
		walk(p, child, out)
	}
}

func leaf(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// clip shortens s to n bytes for a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
