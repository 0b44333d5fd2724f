package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// sseWriter writes Server-Sent Events, flushing each one as it is written
// unless hold is set (more chunks are already waiting: the write after
// them flushes the lot).
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	hold    bool
	buf     []byte
	flushes int // for tests and the coalescing benchmark
}

func newSSE(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *sseWriter) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no") // proxies must not buffer tokens
	s.w.WriteHeader(http.StatusOK)
	s.started = true
	_ = s.rc.Flush()
}

func (s *sseWriter) data(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.raw(b)
}

func (s *sseWriter) done() error { return s.raw([]byte("[DONE]")) }

func (s *sseWriter) raw(b []byte) error {
	s.buf = append(append(append(s.buf[:0], "data: "...), b...), "\n\n"...)
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	if s.hold {
		return nil
	}
	s.flushes++
	return s.rc.Flush()
}

// splitIncompleteUTF8 returns b without a trailing partial UTF-8 sequence,
// and that partial sequence: a token boundary may cut a character in two, and
// JSON would turn each half into U+FFFD.
func splitIncompleteUTF8(b []byte) (complete, rest []byte) {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i], append([]byte(nil), b[i:]...)
			}
			break
		}
	}
	return b, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
