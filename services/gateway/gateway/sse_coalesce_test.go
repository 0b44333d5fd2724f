package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countingFlusher counts the flushes that reach the connection.
type countingFlusher struct {
	*httptest.ResponseRecorder
	flushes int
}

func (c *countingFlusher) Flush() { c.flushes++; c.ResponseRecorder.Flush() }

// While more chunks wait (hold), events are written but not flushed; the
// next write without hold flushes them all, and [DONE] always flushes.
func TestSSECoalescing(t *testing.T) {
	w := &countingFlusher{ResponseRecorder: httptest.NewRecorder()}
	s := newSSE(w)
	s.start()
	require.Equal(t, 1, w.flushes, "headers go out at once")
	s.hold = true
	for range 5 {
		require.NoError(t, s.raw([]byte(`{"x":1}`)))
	}
	assert.Equal(t, 1, w.flushes, "a burst is not flushed event by event")
	s.hold = false
	require.NoError(t, s.raw([]byte(`{"x":2}`)))
	assert.Equal(t, 2, w.flushes, "the write that catches up flushes the burst")
	s.hold = true
	require.NoError(t, s.done())
	assert.Equal(t, 2, w.flushes)
	s.hold = false
	require.NoError(t, s.done())
	assert.Equal(t, 3, w.flushes)
	assert.Equal(t, http.StatusOK, w.Code)
	assert.Equal(t, 5+1+2, countEvents(w.Body.String()))
}

func countEvents(body string) int {
	n := 0
	for i := 0; i+6 <= len(body); i++ {
		if body[i:i+6] == "data: " {
			n++
		}
	}
	return n
}
