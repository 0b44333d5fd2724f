package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// MaxEventBytes bounds one SSE event (its lines together), so a server that
// never ends a line cannot make the agent buffer without limit.
const MaxEventBytes = 4 << 20

// ErrEventTooLarge is returned for an event over MaxEventBytes.
var ErrEventTooLarge = fmt.Errorf("sse: event larger than %d bytes", MaxEventBytes)

// Event is one Server-Sent Event: its type (empty = "message") and its data
// lines joined by "\n".
type Event struct {
	Type string
	Data []byte
}

// SSEReader parses a text/event-stream (WHATWG HTML §9.2.6): lines end in
// \n, \r\n or \r; "data:" lines accumulate; a blank line dispatches the
// event; lines starting with ':' are comments; one space after the colon is
// dropped. Events without data are skipped, as the spec says.
type SSEReader struct {
	r       *bufio.Reader
	pending bool // a '\r' ended the last line: a following '\n' belongs to it
	line    []byte
}

// NewSSEReader reads events from r.
func NewSSEReader(r io.Reader) *SSEReader {
	return &SSEReader{r: bufio.NewReaderSize(r, 16<<10)}
}

// Next returns the next event. At the end of the input it returns io.EOF, or
// io.ErrUnexpectedEOF when the input ended inside an event.
func (s *SSEReader) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	size := 0
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (hasData || len(line) > 0) {
				return Event{}, io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		size += len(line) + 1
		if size > MaxEventBytes {
			return Event{}, ErrEventTooLarge
		}
		if len(line) == 0 {
			if hasData {
				ev.Data = data
				return ev, nil
			}
			ev.Type = ""
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "event":
			ev.Type = string(value)
		}
	}
}

// readLine returns the next line without its terminator. The slice is only
// valid until the next call.
func (s *SSEReader) readLine() ([]byte, error) {
	s.line = s.line[:0]
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(s.line) > 0 {
				// A last line without terminator: report it, then EOF.
				return s.line, io.EOF
			}
			return s.line, err
		}
		if s.pending {
			s.pending = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return s.line, nil
		case '\r':
			s.pending = true
			return s.line, nil
		}
		if len(s.line) >= MaxEventBytes {
			return nil, ErrEventTooLarge
		}
		s.line = append(s.line, b)
	}
}
