package nodeagent

import (
	"strings"
	"time"
)

// earlyCancels remembers fed.cancel.<id> for requests this node has not been
// handed yet. A client whose deadline passes while a router is still retrying
// cancels before the dispatch reaches the node; without this the node would
// then run the request to completion for nobody. Guarded by Service.mu.
type earlyCancels struct {
	at map[string]earlyCancel
}

// earlyCancel is one remembered cancel: when, and its Fed-Cancel-Key.
type earlyCancel struct {
	at  time.Time
	key string
}

const (
	earlyCancelTTL = 2 * time.Minute // longer than any dispatch can lag its cancel
	earlyCancelMax = 4096            // bounds memory against a flood of cancels
)

func (e *earlyCancels) remember(id, key string, now time.Time) {
	if e.at == nil {
		e.at = map[string]earlyCancel{}
	}
	if len(e.at) >= earlyCancelMax {
		for k, c := range e.at {
			if now.Sub(c.at) > earlyCancelTTL {
				delete(e.at, k)
			}
		}
		if len(e.at) >= earlyCancelMax {
			return // full of fresh entries: forget this one rather than grow
		}
	}
	// key is sliced from the cancel's header block (nats.go): kept for
	// minutes, it would pin the whole block.
	e.at[id] = earlyCancel{at: now, key: strings.Clone(key)}
}

// take reports whether id was canceled early with the dispatch's cancel
// key, and forgets it. A remembered cancel with another key (someone who
// does not hold the secret) does not count.
func (e *earlyCancels) take(id, key string) bool {
	c, ok := e.at[id]
	if ok {
		delete(e.at, id)
	}
	return ok && time.Since(c.at) <= earlyCancelTTL && c.key == key
}
