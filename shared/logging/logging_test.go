package logging

import (
	"bytes"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLogLines(t *testing.T) {
	cases := []struct {
		name, format string
		check        func(t *testing.T, line string)
	}{
		{"json has millisecond timestamps", FormatJSON, func(t *testing.T, line string) {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &m))
			assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}`, m["time"])
		}},
		{"console has no colour off a terminal", FormatConsole, func(t *testing.T, line string) {
			assert.NotContains(t, line, "\x1b[", "ANSI escapes in a file")
			assert.Regexp(t, regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} `), line)
			assert.Contains(t, line, "component=router")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			l := Component(New(&b, c.format, "info"), "router")
			l.Info().Msg("hello")
			c.check(t, b.String())
		})
	}
}

func TestMillisecondsAreReal(t *testing.T) {
	// With whole-second timestamps every line ended in .000; ten lines in a
	// row all on an exact second would be a one-in-10^30 coincidence.
	var b bytes.Buffer
	l := New(&b, FormatJSON, "info")
	zeros := 0
	for range 10 {
		b.Reset()
		l.Info().Msg("x")
		var m map[string]string
		require.NoError(t, json.Unmarshal(b.Bytes(), &m))
		if regexp.MustCompile(`\.000`).MatchString(m["time"]) {
			zeros++
		}
		time.Sleep(3 * time.Millisecond)
	}
	assert.Less(t, zeros, 10)
}
