package logging

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
)

func TestLimitedLetsOneLinePerInterval(t *testing.T) {
	var buf bytes.Buffer
	l := zerolog.New(&buf)
	r := NewLimited(50 * time.Millisecond)
	for range 10 {
		r.DroppedMessage(&l, errors.New("bad json"), "fed.heartbeat.x")
	}
	assert.Equal(t, 1, strings.Count(buf.String(), "\n"), buf.String())
	time.Sleep(60 * time.Millisecond)
	r.DroppedMessage(&l, errors.New("bad json"), "fed.heartbeat.x")
	assert.Equal(t, 2, strings.Count(buf.String(), "\n"))
	assert.Contains(t, buf.String(), `"suppressed":9`)
}
