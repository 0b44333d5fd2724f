// Package logging builds the zerolog loggers every fedmesh program uses and
// names the log keys, so one concept has one key in every service.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Format of log output.
const (
	FormatConsole = "console"
	FormatJSON    = "json"
)

// Keys of log fields that more than one service writes.
const (
	KeyRequest  = "request_id"
	KeyNode     = "node"
	KeyTenant   = "tenant"
	KeyModel    = "model"
	KeySubject  = "subject"
	KeyInstance = "instance" // this process's own instance
	// KeyNodeInstance is the instance id a node agent reports (heartbeats, registrations).
	KeyNodeInstance = "instance_id"
	KeyComponent    = "component"
	// KeyElapsed is how long something took (zerolog writes durations in ms).
	KeyElapsed = "elapsed"
)

// timeFormat is RFC 3339 with milliseconds, in JSON and on the console.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func init() {
	// zerolog formats the timestamp field with this global; its default has
	// whole seconds, which made every console line end in ".000".
	zerolog.TimeFieldFormat = timeFormat
}

// New returns a logger writing to w in format ("console" is human-readable,
// anything else JSON) at level ("debug", "info", …; bad or empty: info).
// Console output is coloured only when w is a terminal.
func New(w io.Writer, format, level string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if format == FormatConsole {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly + ".000", NoColor: !isTerminal(w)}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// Component tags a logger with the part of the mesh it belongs to.
func Component(l zerolog.Logger, name string) zerolog.Logger {
	return l.With().Str(KeyComponent, name).Logger()
}
