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
	rawTPS, meshTPS   float64       // tokens/s over all streams and the wall time
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

// rawStream is one stream from the raw streamer on subject, which sends
// tokens chunks and a final.
func rawStream(nc *nats.Conn, subject string, tokens int) (streamRun, error) {
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
	if err := nc.PublishRequest(subject, inbox, benchBody); err != nil {
		return sr, err
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return sr, fmt.Errorf("raw stream: timeout after %d chunks", sr.tokens)
	}
	if sr.tokens != tokens {
		return sr, fmt.Errorf("raw stream: %d chunks, want %d", sr.tokens, tokens)
	}
	return sr, nil
}

// meshStream is one stream of model through the mesh, read with the SDK.
func meshStream(ctx context.Context, c *client.Client, model string) (streamRun, error) {
	var sr streamRun
	t0 := time.Now()
	st, err := c.InferStream(ctx, client.Request{Capability: wire.CapGenerate, Model: model, Body: benchBody})
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

// decodeAlternated measures the decode rate of long streams: waves of conc
// streams at once, raw and routed waves alternating (which goes first
// alternates too) until each side has perSide streams. Both sides thus see
// the same machine, each wave streams only one kind (a raw and a routed
// stream sharing the client would measure who wins its CPU, not the
// mesh), and a stream of thousands of tokens lasts long enough that one
// scheduling hiccup moves its rate by little.
// decodeRates are each side's decode rates and CPU per token.
type decodeRates struct {
	raw, mesh       []float64
	rawCPU, meshCPU time.Duration
}

func (r *rig) decodeAlternated(ctx context.Context, conc, perSide int) (decodeRates, error) {
	sess, err := r.session()
	if err != nil {
		return decodeRates{}, err
	}
	defer sess.close()
	nc, c := sess.nc, sess.c
	sides := [2]func() (streamRun, error){
		func() (streamRun, error) { return rawStream(nc, rawLongStreamSubject, longStreamTok) },
		func() (streamRun, error) { return meshStream(ctx, c, modelLongStream) },
	}
	for _, one := range sides { // warm up
		if _, err := one(); err != nil {
			return decodeRates{}, err
		}
	}
	var rates [2][]float64
	var cpu [2]time.Duration
	wave := func(side int) error {
		cpu0 := processCPU()
		defer func() { cpu[side] += processCPU() - cpu0 }()
		runs := make([]streamRun, conc)
		errs := make([]error, conc)
		var wg sync.WaitGroup
		for i := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runs[i], errs[i] = sides[side]()
			}()
		}
		wg.Wait()
		for i, sr := range runs {
			if errs[i] == nil && sr.tokens != longStreamTok {
				errs[i] = fmt.Errorf("%d chunks, want %d", sr.tokens, longStreamTok)
			}
			if errs[i] != nil {
				return fmt.Errorf("%s stream: %w", [2]string{"raw", "routed"}[side], errs[i])
			}
			rates[side] = append(rates[side], sr.decodeRate())
		}
		return nil
	}
	for round := 0; len(rates[1]) < perSide; round++ {
		first := round % 2
		for _, side := range []int{first, 1 - first} {
			if err := wave(side); err != nil {
				return decodeRates{}, err
			}
		}
	}
	perToken := func(side int) time.Duration {
		return cpu[side] / time.Duration(len(rates[side])*longStreamTok)
	}
	return decodeRates{raw: rates[0], mesh: rates[1], rawCPU: perToken(0), meshCPU: perToken(1)}, nil
}

// streaming runs total streams per side, conc at a time.
func (r *rig) streaming(ctx context.Context, conc, total int) (streamResult, error) {
	sess, err := r.session()
	if err != nil {
		return streamResult{}, err
	}
	defer sess.close()
	nc, c := sess.nc, sess.c

	rawOne := func() (streamRun, error) { return rawStream(nc, rawStreamSubject, streamTok) }
	meshOne := func() (streamRun, error) { return meshStream(ctx, c, modelStream) }
	run := func(one func() (streamRun, error)) (time.Duration, float64, error) {
		// Warm up.
		for i := 0; i < 5; i++ {
			if _, err := one(); err != nil {
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
					sr, err := one()
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					ttfts = append(ttfts, sr.ttft)
					tokens += sr.tokens
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
