package health

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Decoders of untrusted events. Each returns an error for anything it cannot
// trust completely, and the caller then changes nothing.

// maxTenantLen bounds tenant names kept as stats keys.
const maxTenantLen = 128

// nodeOfSubject reads the node id from the last token of a per-node subject
// and checks that the body, when it names a node, names the same one.
func nodeOfSubject(subj, bodyNode string) (string, error) {
	id := subject.LastToken(subj)
	if err := wire.ValidateID("node_id", id); err != nil {
		return "", fmt.Errorf("subject %q: %w", subj, err)
	}
	if bodyNode != "" && bodyNode != id {
		return "", fmt.Errorf("message on %s names node %q", subj, bodyNode)
	}
	return id, nil
}

func finite(name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%s %v must be a finite number >= 0", name, v)
	}
	return nil
}

func decodeHeartbeat(subj string, data []byte) (record.Heartbeat, error) {
	var hb record.Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return hb, fmt.Errorf("heartbeat on %s: %w", subj, err)
	}
	id, err := nodeOfSubject(subj, hb.NodeID)
	if err != nil {
		return hb, err
	}
	hb.NodeID = id
	if hb.InFlight < 0 || hb.QueueDepth < 0 || hb.MaxConcurrency < 0 {
		return hb, fmt.Errorf("heartbeat of node %s: negative in_flight/queue_depth/max_concurrency", id)
	}
	if err := finite("gpu_utilization", hb.GPUUtilization); err != nil {
		return hb, fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	if err := finite("throughput_tps", hb.ThroughputTPS); err != nil {
		return hb, fmt.Errorf("heartbeat of node %s: %w", id, err)
	}
	return hb, nil
}

func validCode(c int) bool { return c == 0 || (c >= 100 && c <= 999) }

func decodeOutcome(subj string, data []byte) (record.Outcome, error) {
	var o record.Outcome
	if err := json.Unmarshal(data, &o); err != nil {
		return o, fmt.Errorf("outcome on %s: %w", subj, err)
	}
	id, err := nodeOfSubject(subj, o.NodeID)
	if err != nil {
		return o, err
	}
	o.NodeID = id
	switch o.Kind {
	case record.OutcomeCompleted, record.OutcomeDispatchFailed, record.OutcomeDuplicate, record.OutcomeProbe:
	default:
		return o, fmt.Errorf("outcome of node %s (request %s): unknown kind %q", id, o.RequestID, o.Kind)
	}
	if !validCode(o.Code) || o.Attempt < 0 || o.Tokens < 0 || len(o.Tenant) > maxTenantLen {
		return o, fmt.Errorf("outcome of node %s (request %s): bad code/attempt/tokens/tenant", id, o.RequestID)
	}
	if err := finite("latency_ms", o.LatencyMs); err != nil {
		return o, fmt.Errorf("outcome of node %s (request %s): %w", id, o.RequestID, err)
	}
	if err := finite("ttft_ms", o.TTFTMs); err != nil {
		return o, fmt.Errorf("outcome of node %s (request %s): %w", id, o.RequestID, err)
	}
	return o, nil
}

func decodeUnplaced(data []byte) (record.Unplaced, error) {
	var u record.Unplaced
	if err := json.Unmarshal(data, &u); err != nil {
		return u, fmt.Errorf("unplaced event: %w", err)
	}
	if !validCode(u.Code) || u.Attempts < 0 || len(u.Tenant) > maxTenantLen {
		return u, fmt.Errorf("unplaced event (request %s): bad code/attempts/tenant", u.RequestID)
	}
	return u, nil
}

// verdict is what one outcome means for a node's state and circuit.
type verdict int

const (
	neutral verdict = iota
	success
	failure
)

// judge classifies an outcome (DESIGN §6). Failures are server-side errors
// (500, 503, 504) and lost dispatches; client errors (4xx, including 429
// busy and 499 canceled), duplicates and anything about a draining node say
// nothing about the node's health. A failed outcome without a code is a 500.
func judge(o *record.Outcome, draining bool) verdict {
	if o.OK {
		switch o.Kind {
		case record.OutcomeCompleted, record.OutcomeProbe:
			return success
		}
		return neutral
	}
	if draining || mentionsDraining(o.Error) {
		return neutral
	}
	switch o.Kind {
	case record.OutcomeCompleted, record.OutcomeProbe:
		switch o.Code {
		case 0, wire.CodeInternal, wire.CodeNoCapacity, wire.CodeTimeout:
			return failure
		}
	case record.OutcomeDispatchFailed:
		if o.Code < 400 || o.Code >= 500 {
			return failure
		}
	}
	return neutral
}

func mentionsDraining(s string) bool {
	return strings.Contains(strings.ToLower(s), wire.StatusDraining)
}
