package openai

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readAll(t testing.TB, in string) ([]Event, error) {
	r := NewSSEReader(strings.NewReader(in))
	var out []Event
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, ev)
	}
}

func TestSSEReader(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []Event
		err  error
	}{
		{"openai stream", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []Event{{Data: []byte(`{"a":1}`)}, {Data: []byte("[DONE]")}}, nil},
		{"crlf and cr", "data: x\r\n\r\ndata:y\r\rdata: z\n\n", []Event{{Data: []byte("x")}, {Data: []byte("y")}, {Data: []byte("z")}}, nil},
		{"multi-line data", "data: a\ndata: b\n\n", []Event{{Data: []byte("a\nb")}}, nil},
		{"comments and event type", ": keepalive\nevent: error\ndata: boom\n\n", []Event{{Type: "error", Data: []byte("boom")}}, nil},
		{"no data is no event", "event: ping\n\nid: 3\nretry: 10\n\n", nil, nil},
		{"unknown fields ignored", "foo: bar\ndata: ok\n\n", []Event{{Data: []byte("ok")}}, nil},
		{"empty data field", "data\n\n", []Event{{Data: []byte{}}}, nil},
		{"only one space stripped", "data:  two\n\n", []Event{{Data: []byte(" two")}}, nil},
		{"cut inside an event", "data: {\"a\":", nil, io.ErrUnexpectedEOF},
		{"cut after data line", "data: x\n", nil, io.ErrUnexpectedEOF},
		{"empty input", "", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.in)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Len(t, got, len(tc.want))
			for i := range got {
				assert.Equal(t, tc.want[i].Type, got[i].Type)
				assert.Equal(t, string(tc.want[i].Data), string(got[i].Data))
			}
		})
	}
}

func TestSSEReaderBoundsLines(t *testing.T) {
	_, err := readAll(t, "data: "+strings.Repeat("x", MaxEventBytes+10))
	require.ErrorIs(t, err, ErrEventTooLarge)
}

// FuzzSSEReader: the stream comes from a model server we do not control; the
// parser must never panic or loop, and data written as SSE must read back.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"), "line one\nline two")
	f.Add([]byte("data: x\r\n\r\n: c\revent: e\rdata:y\r\r"), "")
	f.Add([]byte("data"), "\r")
	f.Fuzz(func(t *testing.T, raw []byte, payload string) {
		r := NewSSEReader(bytes.NewReader(raw))
		for i := 0; i <= len(raw); i++ {
			if _, err := r.Next(); err != nil {
				break
			}
			if i == len(raw) {
				t.Fatal("more events than input bytes")
			}
		}
		// Round trip: every line of payload as a data line.
		lines := strings.FieldsFunc(strings.ReplaceAll(payload, "\r\n", "\n"), func(r rune) bool { return r == '\n' || r == '\r' })
		if len(lines) == 0 {
			return
		}
		var b strings.Builder
		for _, l := range lines {
			b.WriteString("data: " + l + "\n")
		}
		b.WriteString("\n")
		evs, err := readAll(t, b.String())
		if err != nil || len(evs) != 1 {
			t.Fatalf("round trip of %q: %v, %d events", payload, err, len(evs))
		}
		if string(evs[0].Data) != strings.Join(lines, "\n") {
			t.Fatalf("round trip: got %q want %q", evs[0].Data, strings.Join(lines, "\n"))
		}
	})
}

// FuzzReadText: the chat answer stream is untrusted server output; reading
// it must end in text or an error, never a panic or a hang.
func FuzzReadText(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"), true)
	f.Add([]byte(`{"choices":[{"message":{"content":"whole"}}],"usage":{"completion_tokens":1}}`), false)
	f.Add([]byte("data: {\"error\":\"x\"}\n\n"), true)
	f.Fuzz(func(t *testing.T, body []byte, sse bool) {
		resp := &http.Response{Header: http.Header{}}
		if sse {
			resp.Header.Set("Content-Type", "text/event-stream")
		}
		n := 0
		res, _ := readText(resp, bytes.NewReader(body), func(b []byte) error {
			n += len(b)
			return nil
		})
		if res.Tokens < 0 || n > len(body) {
			t.Fatalf("tokens %d, emitted %d bytes from %d", res.Tokens, n, len(body))
		}
	})
}
