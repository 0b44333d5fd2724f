package gateway

import (
	"encoding/json"
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
	f.Fuzz(func(t *testing.T, b []byte, base64 bool) {
		out, err := convertEmbeddings(b, base64, "m", 1)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("produced invalid JSON %q", out)
		}
	})
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
