package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MaxOutcomesBatch bounds the outcomes one batch on fed.outcome.<node_id>
// may hold; readers refuse a bigger batch whole. Node agents send at most
// 32 (nodeagent: outcomes batched per few ms).
const MaxOutcomesBatch = 256

// OutcomesHint guesses how many outcomes a batch holds, to size the slice
// it decodes into: grown from nil, a batch of 32 copied every outcome
// decoded so far at each doubling. It counts "kind" keys, which every
// outcome has, and is only a capacity: a wrong guess costs a copy, never a
// wrong result. Bounded by MaxOutcomesBatch, so a crafted body cannot make
// a reader allocate more than the largest batch it would take.
func OutcomesHint(data []byte) int {
	return min(bytes.Count(data, kindKey), MaxOutcomesBatch)
}

var kindKey = []byte(`"kind"`)

// DecodeOutcomes decodes what a node agent publishes on
// fed.outcome.<node_id>: one outcome (a JSON object, as DecodeOutcome
// takes) or a batch of them (a JSON array of such objects, oldest first).
// Each outcome of a batch is judged on its own, exactly as DecodeOutcome
// judges a single one: it returns the outcomes that pass, and an error
// naming each that did not (then the caller uses the good ones and logs the
// error). A body that is neither, or a batch of more than
// MaxOutcomesBatch, yields no outcome.
func DecodeOutcomes(subj string, data []byte) ([]Outcome, error) {
	if !isArray(data) {
		o, err := DecodeOutcome(subj, data)
		if err != nil {
			return nil, err
		}
		return []Outcome{o}, nil
	}
	all, ok := parseOutcomeBatch(data)
	if !ok {
		all = make([]Outcome, 0, OutcomesHint(data))
	}
	if ok || json.Unmarshal(data, &all) == nil {
		if len(all) > MaxOutcomesBatch {
			return nil, batchTooLarge(subj, len(all))
		}
		good := all[:0]
		var errs []error
		for i := range all {
			if err := all[i].check(subj); err != nil {
				errs = append(errs, fmt.Errorf("outcome %d of the batch on %s: %w", i, subj, err))
				continue
			}
			good = append(good, all[i])
		}
		return good, errors.Join(errs...)
	}
	// Some element does not even decode (a wrong type somewhere): judge the
	// elements one by one so the others still count.
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("outcome batch on %s: %w", subj, err)
	}
	if len(raw) > MaxOutcomesBatch {
		return nil, batchTooLarge(subj, len(raw))
	}
	good := make([]Outcome, 0, len(raw))
	var errs []error
	for i, r := range raw {
		o, err := DecodeOutcome(subj, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("outcome %d of the batch: %w", i, err))
			continue
		}
		good = append(good, o)
	}
	return good, errors.Join(errs...)
}

// ParseOutcomes decodes an outcome body as DecodeOutcomes does but judges
// nothing: every element, in order, with a field (or an element) of the
// wrong type left zero, as encoding/json leaves it; none for a body that is
// not JSON, or a batch of more than MaxOutcomesBatch. It is for readers
// that must act on a completion whatever its fields they do not use say
// (routers end the dispatch it names), and judge the rest themselves.
func ParseOutcomes(data []byte) []Outcome {
	if !isArray(data) {
		var o Outcome
		if parseOutcome(data, &o) {
			return []Outcome{o}
		}
		if o = (Outcome{}); !decodeLenient(data, &o) {
			return nil
		}
		return []Outcome{o}
	}
	if all, ok := parseOutcomeBatch(data); ok {
		return all
	}
	all := make([]Outcome, 0, OutcomesHint(data))
	if decodeLenient(data, &all) {
		if len(all) > MaxOutcomesBatch {
			return nil
		}
		return all
	}
	// An element that does not decode even so (a time that does not parse)
	// spoils only itself.
	var raw []json.RawMessage
	if json.Unmarshal(data, &raw) != nil || len(raw) > MaxOutcomesBatch {
		return nil
	}
	all = all[:0]
	for _, r := range raw {
		var o Outcome
		if parseOutcome(r, &o) {
			all = append(all, o)
		} else if o = (Outcome{}); decodeLenient(r, &o) {
			all = append(all, o)
		}
	}
	return all
}

// decodeLenient is json.Unmarshal that takes a value of the wrong type as
// its zero: encoding/json then fills all the rest and reports only the
// first such value.
func decodeLenient(data []byte, v any) bool {
	err := json.Unmarshal(data, v)
	var wrongType *json.UnmarshalTypeError
	return err == nil || errors.As(err, &wrongType)
}

func batchTooLarge(subj string, n int) error {
	return fmt.Errorf("outcome batch on %s: %d outcomes, more than %d", subj, n, MaxOutcomesBatch)
}

// isArray reports whether data's first JSON token opens an array.
func isArray(data []byte) bool {
	data = bytes.TrimLeft(data, " \t\r\n")
	return len(data) > 0 && data[0] == '['
}
