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
	rawTTFT, meshTTFT     time.Duration // p50
	rawTPS, meshTPS       float64       // tokens/s over all streams and the wall time
	rawDecode, meshDecode float64       // p50 over streams of tokens/s after the first token
}

// one stream's measurements
type streamRun struct {
	ttft, last time.Duration // first and last token since the request
	tokens     int
}

// decodeRate is the tokens after the first over the time after the first.
func (s streamRun) decodeRate() float64 {
	if s.tokens < 2 || s.last <= s.ttft {
		return 0
	}
	return float64(s.tokens-1) / (s.last - s.ttft).Seconds()
}

// streaming runs total streams per side, conc at a time.
func (r *rig) streaming(ctx context.Context, conc, total int) (streamResult, error) {
	sess, err := r.session()
	if err != nil {
		return streamResult{}, err
	}
	defer sess.close()
	nc, c := sess.nc, sess.c

	rawOne := func() (streamRun, error) {
		inbox := nats.NewInbox()
		done := make(chan struct{})
		var sr streamRun
		t0 := time.Now()
		sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
			if len(m.Data) == 0 {
				close(done)
				return
			}
			sr.last = time.Since(t0)
			if sr.tokens == 0 {
				sr.ttft = sr.last
			}
			sr.tokens++
		})
		if err != nil {
			return sr, err
		}
		defer sub.Unsubscribe()
		if err := nc.PublishRequest(rawStreamSubject, inbox, benchBody); err != nil {
			return sr, err
		}
		select {
		case <-done:
			return sr, nil
		case <-time.After(10 * time.Second):
			return sr, fmt.Errorf("raw stream: timeout after %d chunks", sr.tokens)
		}
	}
	meshOne := func() (streamRun, error) {
		var sr streamRun
		t0 := time.Now()
		st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Model: modelStream, Body: benchBody})
		if err != nil {
			return sr, err
		}
		defer st.Close()
		for _, err := range st.Chunks() {
			if err != nil {
				return sr, err
			}
			sr.last = time.Since(t0)
			if sr.tokens == 0 {
				sr.ttft = sr.last
			}
			sr.tokens++
		}
		return sr, nil
	}
	run := func(one func() (streamRun, error)) (time.Duration, float64, float64, error) {
		// Warm up.
		for i := 0; i < 5; i++ {
			if _, err := one(); err != nil {
				return 0, 0, 0, err
			}
		}
		var mu sync.Mutex
		var ttfts []time.Duration
		var rates []float64
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
					sr, err := one()
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					ttfts = append(ttfts, sr.ttft)
					rates = append(rates, sr.decodeRate())
					tokens += sr.tokens
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		if firstErr != nil {
			return 0, 0, 0, firstErr
		}
		if tokens != total*streamTok {
			return 0, 0, 0, fmt.Errorf("got %d tokens, want %d", tokens, total*streamTok)
		}
		return summarise(ttfts).p50, float64(tokens) / el.Seconds(), medianFloat(rates), nil
	}
	var res streamResult
	if res.rawTTFT, res.rawTPS, res.rawDecode, err = run(rawOne); err != nil {
		return res, fmt.Errorf("raw streams (%d concurrent): %w", conc, err)
	}
	if res.meshTTFT, res.meshTPS, res.meshDecode, err = run(meshOne); err != nil {
		return res, fmt.Errorf("mesh streams (%d concurrent): %w", conc, err)
	}
	return res, nil
}
