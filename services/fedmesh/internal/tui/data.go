// Package tui is `fedmesh top`: seven live views of the mesh (catalog,
// health, routing, circuits, stats, policies, help). Live follows the
// buckets (KV watches) and the event subjects, asking fed.stats, the one
// thing the mesh offers no watch for, every interval; Model is the
// bubbletea program on top of it; Once prints one view as plain text.
package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/fedmesh/fedmesh/shared/record"
)

// View is one screen of `fedmesh top`.
type View int

// The seven views, in tab order (keys 1–7).
const (
	ViewCatalog View = iota
	ViewHealth
	ViewRouting
	ViewCircuits
	ViewStats
	ViewPolicies
	ViewHelp
	numViews
)

var viewNames = [numViews]string{"catalog", "health", "routing", "circuits", "stats", "policies", "help"}

var viewTitles = [numViews]string{"Catalog", "Health", "Routing", "Circuits", "Stats", "Policies", "Help"}

func (v View) String() string {
	if v < 0 || v >= numViews {
		return fmt.Sprintf("View(%d)", int(v))
	}
	return viewNames[v]
}

// Title is the view's name in the tab bar.
func (v View) Title() string {
	if v < 0 || v >= numViews {
		return v.String()
	}
	return viewTitles[v]
}

// ViewNames lists the names ParseView accepts, in tab order.
func ViewNames() []string { return append([]string(nil), viewNames[:]...) }

// ParseView maps a name of ViewNames (any case) or its number 1–7 to its view.
func ParseView(name string) (View, error) {
	for i, n := range viewNames {
		if strings.EqualFold(n, name) || name == fmt.Sprint(i+1) {
			return View(i), nil
		}
	}
	return 0, fmt.Errorf("unknown view %q (want one of %s)", name, strings.Join(viewNames[:], ", "))
}

// Connection states of Conn.State.
const (
	ConnConnecting   = "connecting"
	ConnConnected    = "connected"
	ConnReconnecting = "disconnected, reconnecting"
	ConnClosed       = "disconnected, closed"
)

// Conn is the true state of the NATS connection, from nats.Conn.Status and
// its disconnect / reconnect / closed handlers.
type Conn struct {
	State string
	URL   string // the server connected to, or the one asked for; never credentials
	// LastErr is why the connection last dropped ("" when it never did).
	LastErr string
	// Since is when the state last changed through a handler (zero: never).
	Since      time.Time
	Reconnects uint64
}

// Up reports whether the connection is usable now.
func (c Conn) Up() bool { return c.State == ConnConnected }

// Data is one consistent copy of everything the views show. The source
// builds a fresh one on request; the views only read it.
type Data struct {
	Taken time.Time
	// Since is when the source started: the routing tail and the per-model
	// windows hold only what it saw from then on.
	Since time.Time
	Conn  Conn
	// Loading says what the source still waits for; "" once every bucket
	// is followed.
	Loading string
	Nodes   []NodeData // by node id
	Models  []ModelData
	Routes  []Route // newest first
	Stats   StatsData
	Config  []ConfigEntry // router.policy, regions, tenants, then other keys
	Ignored []Ignored     // by source

	// Health settings the circuit view needs (not on the wire).
	ResetTimeout      time.Duration
	HalfOpenSuccesses int
}

// NodeData is one node: its catalog record, its health record and its
// fed.stats counters, joined by node id. Any of them may be missing.
type NodeData struct {
	ID       string
	Catalog  *record.Node
	Health   *record.Health
	Counters *record.Counters
	// Heartbeat is the node's latest heartbeat (fed.heartbeat.<id>): its
	// load as the node agent reports it, fresher than the health record.
	Heartbeat   *record.Heartbeat
	HeartbeatAt time.Time // when this top received it
	// Effective clearance: the catalog's, capped by fed_config regions.
	Clearance string
	Capped    bool // the region's privacy lowered the clearance
	// Unfinished: decisions placed on the node whose outcome this top has
	// not seen (within the request timeout).
	Unfinished int
	// ProbeInFlight: a half-open node has an unfinished request placed
	// after its circuit opened (the one request routers allow it).
	ProbeInFlight bool
}

// ModelData is what this top saw of one node's model in completed
// outcomes (fed.outcome.*) since it started.
type ModelData struct {
	Node, Model        string
	Requests, Failures int64
	Samples            int     // successful requests behind the percentiles
	P50Ms, P99Ms       float64 // latency of successful requests; 0: none
	TTFTP50Ms          float64 // 0: none reported
	TPOTP50Ms          float64 // time per output token after the first; 0: none
}

// Route is one row of the routing tail: a router's decision joined by
// request id with the request's end (the node's completed outcome, or the
// router's unplaced event).
type Route struct {
	Seen     time.Time
	Router   string
	Decision *record.Decision // nil: an unplaced request no decision names
	Outcome  *record.Outcome
	Unplaced *record.Unplaced
}

// RequestID of the row's request.
func (r *Route) RequestID() string {
	switch {
	case r.Decision != nil:
		return r.Decision.RequestID
	case r.Unplaced != nil:
		return r.Unplaced.RequestID
	}
	return ""
}

// Finished reports whether the request's end is known.
func (r *Route) Finished() bool { return r.Outcome != nil || r.Unplaced != nil }

// Series is the history of one stats slice, oldest first: one point per
// stats taken (the fed.stats answer at start, then health's
// fed.health.stats events), and a zero-rate point per interval while the
// mesh is quiet. NaN marks a point without data.
type Series struct {
	Rate []float64 // req/s since the previous point
	P99  []float64 // latency p99 in ms
}

// LastRate is the newest request rate, if known.
func (s Series) LastRate() (float64, bool) {
	if n := len(s.Rate); n > 0 && !isNaN(s.Rate[n-1]) {
		return s.Rate[n-1], true
	}
	return 0, false
}

// StatsData is the last stats taken (fed.stats answer or fed.health.stats
// event) and the history of them.
type StatsData struct {
	Have  bool // stats arrived
	At    time.Time
	Stats record.Stats
	// Err is the last fed.stats request's failure ("" after good stats).
	Err   string
	ErrAt time.Time

	Overall Series
	Nodes   map[string]Series
	Tenants map[string]Series
}

// ConfigEntry is one fed_config key as routers read it (DESIGN §5.3):
// the latest value, what is in force, and the last value routers rejected.
type ConfigEntry struct {
	Key string
	// Known: a key routers read; others are shown but ignored by routers.
	Known bool
	// Present: the key holds a value (not deleted, not unset).
	Present  bool
	Revision uint64
	Updated  time.Time
	Value    string // the latest value as stored
	// Valid: the latest value is one routers accept.
	Valid bool
	// InForceRev is the revision whose value routers apply; 0: the
	// router's base (the defaults, no regions, no tenant limits).
	InForceRev uint64
	Policy     record.Policy
	Regions    record.Regions
	Tenants    record.Tenants
	// Rejected is the last value routers refused and why, kept after a
	// good value replaced it.
	Rejected *Rejection
}

// Rejection is a fed_config value routers refused.
type Rejection struct {
	Revision uint64
	At       time.Time
	Value    string
	Reason   string
}

// Ignored counts records or events a source dropped because they did not
// decode, with the last reason.
type Ignored struct {
	Source string
	Count  int
	Last   string
}

// node returns the node with id, or nil.
func (d *Data) node(id string) *NodeData {
	for i := range d.Nodes {
		if d.Nodes[i].ID == id {
			return &d.Nodes[i]
		}
	}
	return nil
}

// config returns the entry of key, or nil.
func (d *Data) config(key string) *ConfigEntry {
	for i := range d.Config {
		if d.Config[i].Key == key {
			return &d.Config[i]
		}
	}
	return nil
}
