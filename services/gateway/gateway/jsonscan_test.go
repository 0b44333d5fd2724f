package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scanAll runs b through an objectScanner for v's fields in pieces of n
// bytes (as the body arrives in reads of any size) and decodes what it kept.
func scanAll(b []byte, n int, v any) (*objectScanner, error) {
	s := newObjectScanner(jsonNames(v))
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := s.Write(b[:k]); err != nil {
			return s, err
		}
		b = b[k:]
	}
	if err := s.Close(); err != nil {
		return s, err
	}
	return s, s.decode(v)
}

func TestObjectScanner(t *testing.T) {
	big := strings.Repeat("x", 3<<20)
	for _, tc := range []struct {
		name string
		body string
		want textRequest
		err  string // "" when valid
	}{
		{"fields first", `{"model":"m1","stream":true,"messages":[{"role":"user","content":"` + big + `"}]}`,
			textRequest{Model: "m1", Stream: true}, ""},
		{"fields last, after a huge string", `{"messages":[{"content":"` + big + `"}],"stream":false,"model":"m2"}`,
			textRequest{Model: "m2"}, ""},
		{"nested model is not the model", `{"x":{"model":"no"},"model":"yes"}`, textRequest{Model: "yes"}, ""},
		{"case-insensitive, escaped, last wins", `{"MODEL":"a","mod\u0065l":"b"}`, textRequest{Model: "b"}, ""},
		{"stream_options kept whole", `{"stream":true,"stream_options":{"include_usage":true},"n":-1.5e+3}`,
			textRequest{Stream: true, StreamOptions: &struct {
				IncludeUsage bool `json:"include_usage"`
			}{true}}, ""},
		{"numbers and literals", `{"a":[0,-0.1,1e5,2E-3,true,false,null],"model":"m"} ` + "\n", textRequest{Model: "m"}, ""},
		{"wrong type", `{"stream":"yes"}`, textRequest{}, "cannot unmarshal string"},
		{"not an object", `["model"]`, textRequest{}, "beginning of an object"},
		{"cut short", `{"model":"m","messages":[`, textRequest{}, "unexpected end of JSON input"},
		{"trailing garbage", `{"model":"m"} x`, textRequest{}, "after the top-level object"},
		{"two objects", `{}{}`, textRequest{}, "after the top-level object"},
		{"control character in a string", "{\"a\":\"\x01\"}", textRequest{}, "in string literal"},
		{"bad escape", `{"a":"\x"}`, textRequest{}, "string escape code"},
		{"bad number", `{"a":01}`, textRequest{}, "after object key:value pair"},
		{"missing colon", `{"a" 1}`, textRequest{}, "after object key"},
		{"trailing comma", `{"a":1,}`, textRequest{}, "object key string"},
		{"huge model", `{"model":"` + strings.Repeat("m", maxKeptLen) + `"}`, textRequest{}, "take more than"},
		{"too deep", `{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`, textRequest{}, "max depth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{1, 7, 64 << 10, len(tc.body)} {
				var got textRequest
				s, err := scanAll([]byte(tc.body), n, &got)
				if tc.err != "" {
					require.Error(t, err, "pieces of %d", n)
					assert.Contains(t, err.Error(), tc.err)
					continue
				}
				require.NoError(t, err, "pieces of %d", n)
				assert.Equal(t, tc.want, got, "pieces of %d", n)
				assert.Less(t, len(s.kept), 200, "only the fields are kept")
			}
		})
	}
}

// The scanner agrees with encoding/json on every input: valid exactly
// when the body is one JSON object, and then its kept members decode as
// the whole body does.
func FuzzObjectScanner(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true}`, `{"Stream":1}`, `{"a":[1,{"model":2}],"model":"x"}`,
		`{"stream_options":{"include_usage":true}}`, `{"model":"\u00e9\ud83d\ude00"}`, `[]`, `null`, `{"a":-0.5e-7}`, `{"a"}`, `{} `} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n <= 0 {
			n = 1
		}
		var got, want textRequest
		_, err := scanAll(b, n, &got)
		isObject := json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) && depth(b) <= maxDepth
		var je *jsonError
		if !isObject {
			if err == nil {
				t.Fatalf("accepted %q, not one JSON object", b)
			}
			return
		}
		wantErr := json.Unmarshal(b, &want)
		switch {
		case errors.As(err, &je) && strings.Contains(je.msg, "take more than"):
			return // the bound on what is kept
		case (err == nil) != (wantErr == nil):
			t.Fatalf("%q: scanner %v, encoding/json %v", b, err, wantErr)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("%q: scanner %+v, encoding/json %+v", b, got, want)
		}
	})
}

// depth is b's nesting depth (b valid JSON).
func depth(b []byte) int {
	d, most := 0, 0
	in, esc := false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case in && c == '\\':
			esc = true
		case c == '"':
			in = !in
		case !in && (c == '{' || c == '['):
			d++
			most = max(most, d)
		case !in && (c == '}' || c == ']'):
			d--
		}
	}
	return most
}

// TestSkipPlain holds the word-at-a-time skip to the byte loop: every byte
// value at every offset of runs up to 24 bytes, from every start.
func TestSkipPlain(t *testing.T) {
	naive := func(p []byte, j int) int {
		for j < len(p) && p[j] != '"' && p[j] != '\\' && p[j] >= 0x20 {
			j++
		}
		return j
	}
	for _, n := range []int{0, 1, 7, 8, 9, 16, 24} {
		for pos := 0; pos < n; pos++ {
			for v := 0; v < 256; v++ {
				p := bytes.Repeat([]byte{'a'}, n)
				if n > 3 {
					p[n-1] = 0xc3 // high bytes are plain
				}
				p[pos] = byte(v)
				for start := 0; start <= n; start++ {
					if got, want := skipPlain(p, start), naive(p, start); got != want {
						t.Fatalf("%q from %d: %d, want %d", p, start, got, want)
					}
				}
			}
		}
	}
}
