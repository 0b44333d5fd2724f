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

// decodeRates are each side's decode rates and CPU per token.
type decodeRates struct {
	raw, mesh       []float64
	rawCPU, meshCPU time.Duration
}

// decode measures the decode rate of long streams: waves of conc streams at
// once, raw and routed waves alternating until each side has perSide
// streams. Each wave streams only one kind (a raw and a routed stream
// sharing the client would measure who wins its CPU, not the mesh), and a
// stream of thousands of tokens lasts long enough that one scheduling
// hiccup moves its rate by little.
func decode(ctx context.Context, sides [2]side, conc, perSide int) (decodeRates, error) {
	for _, s := range sides { // warm up
		if _, err := s.run(ctx, sideOp{Op: opDecode, N: 1}); err != nil {
			return decodeRates{}, err
		}
	}
	var d decodeRates
	err := alternate((perSide+conc-1)/conc, func(side int) error {
		res, err := sides[side].run(ctx, sideOp{Op: opDecode, N: conc})
		if err != nil {
			return err
		}
		if side == sideRaw {
			d.raw, d.rawCPU = append(d.raw, res.Rates...), d.rawCPU+res.CPU
		} else {
			d.mesh, d.meshCPU = append(d.mesh, res.Rates...), d.meshCPU+res.CPU
		}
		return nil
	})
	if err != nil {
		return decodeRates{}, err
	}
	d.rawCPU /= time.Duration(max(1, len(d.raw)*longStreamTok))
	d.meshCPU /= time.Duration(max(1, len(d.mesh)*longStreamTok))
	return d, nil
}

// decodeStream is one 4096-token stream of side on this session.
func (s *session) decodeStream(ctx context.Context, side int) func() (streamRun, error) {
	if side == sideRaw {
		return func() (streamRun, error) { return rawStream(s.nc, rawLongStreamSubject, longStreamTok) }
	}
	return func() (streamRun, error) { return meshStream(ctx, s.c, modelLongStream) }
}

// decodeWave runs conc streams of one at once: their decode rates and the
// process's CPU time over the wave.
func decodeWave(conc int, one func() (streamRun, error)) (sideResult, error) {
	cpu0 := processCPU()
	runs := make([]streamRun, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = one()
		}()
	}
	wg.Wait()
	res := sideResult{CPU: processCPU() - cpu0}
	for i, sr := range runs {
		if errs[i] == nil && sr.tokens != longStreamTok {
			errs[i] = fmt.Errorf("%d chunks, want %d", sr.tokens, longStreamTok)
		}
		if errs[i] != nil {
			return sideResult{}, fmt.Errorf("stream: %w", errs[i])
		}
		res.Rates = append(res.Rates, sr.decodeRate())
	}
	return res, nil
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
