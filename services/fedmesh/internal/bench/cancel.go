package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/subject"
	"github.com/fedmesh/fedmesh/shared/wire"
)

const cancelRuns = 50

// cancelTable measures how long a node takes to stop a stream once its
// client cancels: from Stream.Close (which publishes fed.cancel.<id>) to
// the node's outcome event saying the request ended with 499.
func (r *rig) cancelTable(ctx context.Context, w io.Writer) error {
	sess, err := r.session()
	if err != nil {
		return err
	}
	defer sess.close()
	nc, c := sess.nc, sess.c
	ended := make(chan record.Outcome, 16)
	sub, err := nc.Subscribe(subject.Default.Outcome(slowNode), func(m *nats.Msg) {
		outs, _ := record.DecodeOutcomes(m.Subject, m.Data) // one outcome or a batch
		for _, o := range outs {
			if o.Kind == record.OutcomeCompleted {
				ended <- o
			}
		}
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	took := make([]time.Duration, 0, cancelRuns)
	for range cancelRuns {
		d, err := r.cancelOne(ctx, c, ended)
		if err != nil {
			return fmt.Errorf("bench cancel: %w", err)
		}
		took = append(took, d)
	}
	s := summarise(took)
	fmt.Fprintf(w, "### Cancellation: client cancels mid-stream → the node has stopped (its 499 outcome), %d runs\n\n", cancelRuns)
	fmt.Fprintf(w, "| p50 | p99 | target |\n|---|---|---|\n| %.2f ms | %.2f ms | ≤ 100 ms |\n\n", ms(s.p50), ms(s.p99))
	return nil
}

func (r *rig) cancelOne(ctx context.Context, c *client.Client, ended <-chan record.Outcome) (time.Duration, error) {
	st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Model: modelSlow, Body: benchBody})
	if err != nil {
		return 0, err
	}
	for _, err := range st.Chunks() {
		if err != nil {
			st.Close()
			return 0, err
		}
		break // one token: the stream is running
	}
	id := st.RequestID()
	t0 := time.Now()
	st.Close()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case o := <-ended:
			if o.RequestID != id {
				continue
			}
			if o.Code != wire.CodeCanceled {
				return 0, fmt.Errorf("request %s ended with code %d, want %d", id, o.Code, wire.CodeCanceled)
			}
			return time.Since(t0), nil
		case <-timeout:
			return 0, fmt.Errorf("request %s: no outcome 5 s after cancel", id)
		}
	}
}
