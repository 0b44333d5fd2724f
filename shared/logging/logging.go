// Package logging builds the zerolog loggers every fedmesh program uses.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Format of log output.
const (
	FormatConsole = "console"
	FormatJSON    = "json"
)

// New returns a logger writing to w in format ("console" is human-readable,
// anything else JSON) at level ("debug", "info", …; bad or empty: info).
func New(w io.Writer, format, level string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if format == FormatConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly + ".000"}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// Component tags a logger with the part of the mesh it belongs to.
func Component(l zerolog.Logger, name string) zerolog.Logger {
	return l.With().Str("component", name).Logger()
}
