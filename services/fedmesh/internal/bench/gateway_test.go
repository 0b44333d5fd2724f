package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The gateway part runs the three paths on a real mesh; after warm-up the
// openai node opens no new upstream connections, and the table shows it.
func TestGatewayPart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rg, err := newRig(ctx, 0, false)
	require.NoError(t, err)
	defer rg.close()
	r, err := rg.gatewayMeasure(ctx, 30)
	require.NoError(t, err)
	for _, d := range []dist{r.direct, r.viaSynth, r.viaUpstream} {
		assert.Equal(t, 30, d.n)
		assert.Positive(t, d.p50)
	}
	assert.Zero(t, r.newConnsPerReq, "requests one at a time reuse one upstream connection")
	assert.Zero(t, r.upstreamOpened)

	var out strings.Builder
	require.NoError(t, rg.gatewayTable(ctx, &out, Options{Samples: 10}))
	for _, row := range []string{"| direct to the upstream |", "| gateway → synthetic node |", "| gateway → openai node → the upstream |", "new connections per request"} {
		assert.Contains(t, out.String(), row)
	}
}
