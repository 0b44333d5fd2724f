package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// Keys files and FEDMESH_API_KEYS are operator input: never panic, and what
// parses is valid.
func FuzzParseKeys(f *testing.F) {
	f.Add([]byte("keys:\n  - key: sk-a\n    tenant: acme\n    privacy: confidential\n    regions: [eu-west-1]\n"))
	f.Add([]byte(`{"keys":[{"key":"k","tenant":"t","requests_per_second":1.5}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseKeys(b)
		if err != nil {
			return
		}
		for k, ten := range keys {
			if k == "" || ten.validate() != nil {
				t.Fatalf("accepted invalid entry %q: %+v", k, ten)
			}
		}
	})
}

func FuzzParseKeysEnv(f *testing.F) {
	f.Add("sk-1=acme,sk-2=beta")
	f.Add(`{"keys":[{"key":"k","tenant":"t"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseKeysEnv(s)
		if err != nil {
			return
		}
		for k, ten := range keys {
			if k == "" || ten.ID == "" {
				t.Fatalf("accepted empty key or tenant: %q %+v", k, ten)
			}
		}
	})
}

// Chat bodies come from HTTP clients.
func FuzzParseTextRequest(f *testing.F) {
	f.Add([]byte(`{"model":"chat-1","stream":true,"stream_options":{"include_usage":true},"messages":[]}`))
	f.Add([]byte(`{"model":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseTextRequest(b)
	})
}

// A node's embeddings answer comes off the wire.
func FuzzConvertEmbeddings(f *testing.F) {
	f.Add([]byte(`{"object":"list","data":[{"object":"embedding","embedding":[0.5,-1,2],"index":0}],"model":"m"}`), true)
	f.Add([]byte(`{"data":[{"embedding":"AAAAPwAAgL8AAABA","index":0}]}`), false)
	f.Add([]byte(`{"usage":null,"Model":"x","data":[{"embedding":[1],"index":2,"extra":[]},{"embedding":[2]}],"object":"list","more":{}}`), true)
	f.Add([]byte(`{"data":[{"embedding":[1]}]} x`), false)
	f.Fuzz(func(t *testing.T, b []byte, base64 bool) {
		out, err := convertEmbeddings(b, base64, "m", 1)
		want, wantErr := convertEmbeddingsWhole(b, base64, "m", 1)
		if err != nil {
			// the one documented difference: data given twice
			if wantErr == nil && !dataTwice(b) {
				t.Fatalf("streamed: %v; whole: ok %q", err, want)
			}
			return
		}
		if wantErr != nil {
			t.Fatalf("streamed: ok %q; whole: %v", out, wantErr)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("streamed %q, whole %q", out, want)
		}
		if !json.Valid(out) {
			t.Fatalf("produced invalid JSON %q", out)
		}
	})
}

// dataTwice reports whether b's top-level object has more than one member
// matching data.
func dataTwice(b []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	n := 0
	for k := range m {
		if strings.EqualFold(k, "data") {
			n++
		}
	}
	// a map keeps one of each exact name: a repeat of the same spelling
	// shows only in the raw bytes
	return n > 1 || bytes.Count(bytes.ToLower(b), []byte(`"data"`)) > 1
}

// convertEmbeddingsWhole is the conversion as it was before it streamed
// (json.Unmarshal of the whole answer, then json.Marshal): the fuzz test
// holds streamEmbeddings to it.
func convertEmbeddingsWhole(b []byte, wantBase64 bool, model string, tokens int) ([]byte, error) {
	var er struct {
		Object string          `json:"object"`
		Data   []embedding     `json:"data"`
		Model  string          `json:"model"`
		Usage  json.RawMessage `json:"usage,omitempty"`
	}
	if err := json.Unmarshal(b, &er); err != nil {
		return nil, err
	}
	if er.Data == nil {
		return nil, fmt.Errorf("no data array")
	}
	er.Object = "list"
	if er.Model == "" {
		er.Model = model
	}
	if len(er.Usage) == 0 || string(er.Usage) == "null" {
		er.Usage, _ = json.Marshal(usage{PromptTokens: tokens, TotalTokens: tokens})
	}
	for i := range er.Data { // each element in place, as the old loop did
		if _, err := convertEmbedding(&er.Data[i], i, wantBase64); err != nil {
			return nil, err
		}
	}
	return json.Marshal(er)
}

// Stream chunks are arbitrary bytes from a node.
func FuzzSplitIncompleteUTF8(f *testing.F) {
	f.Add([]byte("a\xc3"))
	f.Add([]byte("\xf0\x9f\x98\x80"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, r := splitIncompleteUTF8(b)
		if string(c)+string(r) != string(b) {
			t.Fatalf("lost bytes: %q + %q != %q", c, r, b)
		}
		if len(r) > 0 && (len(r) >= utf8.UTFMax || utf8.FullRune(r)) {
			t.Fatalf("rest %q is not an incomplete rune", r)
		}
	})
}
