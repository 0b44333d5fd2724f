package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

type streamResult struct {
	rawTTFT, meshTTFT time.Duration // p50
	rawTPS, meshTPS   float64       // tokens/s over all streams
}

// streaming runs total streams per side, conc at a time.
func (r *rig) streaming(ctx context.Context, conc, total int) (streamResult, error) {
	nc, err := r.connect()
	if err != nil {
		return streamResult{}, err
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		return streamResult{}, err
	}
	defer c.Close()

	rawOne := func() (time.Duration, int, error) {
		inbox := nats.NewInbox()
		done := make(chan struct{})
		var first time.Duration
		n := 0
		t0 := time.Now()
		sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
			if n == 0 {
				first = time.Since(t0)
			}
			if len(m.Data) == 0 {
				close(done)
				return
			}
			n++
		})
		if err != nil {
			return 0, 0, err
		}
		defer sub.Unsubscribe()
		if err := nc.PublishRequest(rawStreamSubject, inbox, benchBody); err != nil {
			return 0, 0, err
		}
		select {
		case <-done:
			return first, n, nil
		case <-time.After(10 * time.Second):
			return 0, 0, fmt.Errorf("raw stream: timeout after %d chunks", n)
		}
	}
	meshOne := func() (time.Duration, int, error) {
		t0 := time.Now()
		st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Model: modelStream, Body: benchBody})
		if err != nil {
			return 0, 0, err
		}
		defer st.Close()
		var first time.Duration
		n := 0
		for _, err := range st.Chunks() {
			if err != nil {
				return 0, 0, err
			}
			if n == 0 {
				first = time.Since(t0)
			}
			n++
		}
		return first, n, nil
	}
	run := func(one func() (time.Duration, int, error)) (time.Duration, float64, error) {
		// Warm up.
		for i := 0; i < 5; i++ {
			if _, _, err := one(); err != nil {
				return 0, 0, err
			}
		}
		var mu sync.Mutex
		var ttfts []time.Duration
		tokens := 0
		var firstErr error
		jobs := make(chan struct{}, total)
		for i := 0; i < total; i++ {
			jobs <- struct{}{}
		}
		close(jobs)
		t0 := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < conc; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range jobs {
					ttft, n, err := one()
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					ttfts = append(ttfts, ttft)
					tokens += n
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		if firstErr != nil {
			return 0, 0, firstErr
		}
		if tokens != total*streamTok {
			return 0, 0, fmt.Errorf("got %d tokens, want %d", tokens, total*streamTok)
		}
		return summarise(ttfts).p50, float64(tokens) / el.Seconds(), nil
	}
	var res streamResult
	if res.rawTTFT, res.rawTPS, err = run(rawOne); err != nil {
		return res, fmt.Errorf("raw streams (%d concurrent): %w", conc, err)
	}
	if res.meshTTFT, res.meshTPS, err = run(meshOne); err != nil {
		return res, fmt.Errorf("mesh streams (%d concurrent): %w", conc, err)
	}
	return res, nil
}
