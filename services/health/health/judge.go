package health

import (
	"strings"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// verdict is what one outcome means for a node's state and circuit.
type verdict int

const (
	neutral verdict = iota
	success
	failure
)

// judge classifies an outcome (DESIGN §6). Failures are server-side errors
// (500, 503, 504) and lost dispatches; client errors (4xx, including 413
// too large, 429 busy and 499 canceled), outcomes whose publisher blames
// the request itself (fault "client": a deadline shorter than the node
// could meet, a bad or oversized body, a cancel), duplicates and anything
// about a draining node say nothing about the node's health. A failed
// outcome without a code is a 500.
func judge(o *record.Outcome, draining bool) verdict {
	if o.OK {
		switch o.Kind {
		case record.OutcomeCompleted, record.OutcomeProbe:
			return success
		}
		return neutral
	}
	if o.Fault == record.FaultClient || draining || mentionsDraining(o.Error) {
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
