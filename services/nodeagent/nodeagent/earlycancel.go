package nodeagent

import "time"

// earlyCancels remembers fed.cancel.<id> for requests this node has not been
// handed yet. A client whose deadline passes while a router is still retrying
// cancels before the dispatch reaches the node; without this the node would
// then run the request to completion for nobody. Guarded by Service.mu.
type earlyCancels struct {
	at map[string]time.Time
}

const (
	earlyCancelTTL = 2 * time.Minute // longer than any dispatch can lag its cancel
	earlyCancelMax = 4096            // bounds memory against a flood of cancels
)

func (e *earlyCancels) remember(id string, now time.Time) {
	if e.at == nil {
		e.at = map[string]time.Time{}
	}
	if len(e.at) >= earlyCancelMax {
		for k, t := range e.at {
			if now.Sub(t) > earlyCancelTTL {
				delete(e.at, k)
			}
		}
		if len(e.at) >= earlyCancelMax {
			return // full of fresh entries: forget this one rather than grow
		}
	}
	e.at[id] = now
}

// take reports whether id was canceled early, and forgets it.
func (e *earlyCancels) take(id string) bool {
	t, ok := e.at[id]
	if ok {
		delete(e.at, id)
	}
	return ok && time.Since(t) <= earlyCancelTTL
}
