package benchrouting

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
)

// traceHeader names the columns of Options.Trace. Times are simulated
// milliseconds; predicted_ms is the router's expected TTFT (expected_ttft
// only) scaled like the client's figures, so the two compare directly.
const traceHeader = "workload,load,strategy,seed,request,group,turn,sent_ms,node,predicted_ms,prefix_match,decided_by,ttft_ms,ok\n"

// decisionLog keeps the router's decision events of one run by request id:
// what the trace joins with the client's samples.
type decisionLog struct {
	mu   sync.Mutex
	byID map[string]record.Decision
	sub  *nats.Subscription
}

func watchDecisions(nc *nats.Conn) (*decisionLog, error) {
	l := &decisionLog{byID: map[string]record.Decision{}}
	sub, err := nc.Subscribe(subject.Default.Decisions(), func(m *nats.Msg) {
		var b record.Decisions
		if json.Unmarshal(m.Data, &b) != nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, d := range b.Decisions {
			l.byID[d.RequestID] = d // a retry's later placement replaces the first
		}
	})
	if err != nil {
		return nil, fmt.Errorf("benchrouting: subscribe to decisions: %w", err)
	}
	l.sub = sub
	return l, nil
}

// stop ends the subscription after the events in flight have arrived.
func (l *decisionLog) stop(nc *nats.Conn) {
	_ = nc.Flush() // the router's last batch is flushed on its own timer; the caller waited for it
	_ = l.sub.Unsubscribe()
}

func (l *decisionLog) get(id string) (record.Decision, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.byID[id]
	return d, ok
}

// writeTrace writes one line per sample of a run.
func writeTrace(w io.Writer, o *Options, wl string, load float64, strategy string, seed uint64, samples []sample, ids []string, turns []*turn, l *decisionLog) {
	sim := func(realMs float64) float64 { return realMs * o.TimeScale }
	for i := range samples {
		s := &samples[i]
		d, _ := l.get(ids[i])
		ttft := 0.0
		if s.ok() {
			ttft = sim(float64((s.first - s.sent).Microseconds()) / 1000)
		}
		group, index := -1, 0
		if turns[i] != nil {
			group, index = turns[i].group, turns[i].index
		}
		fmt.Fprintf(w, "%s,%.2f,%s,%d,%d,%d,%d,%.1f,%s,%.1f,%.3f,%s,%.1f,%t\n", wl, load, strategy, seed, i, group, index,
			sim(float64(s.sent.Microseconds())/1000), s.node, sim(d.PredictedTTFTMs), d.PrefixMatch, d.DecidedBy, ttft, s.ok())
	}
}
