package wire

import (
	"crypto/sha256"
	"encoding/base64"
)

// WithdrawKey is the Fed-Cancel-Key of a targeted cancel (Fed-Node: node)
// of a request whose cancel key is key (DESIGN §3.4): a digest of both, 43
// characters, "" when key is "". Every node agent hears every
// fed.cancel.*: a targeted cancel carrying the key itself would hand it to
// them all, and any of them could then cancel the request on the node that
// serves it next. The digest withdraws only node's attempt: the node
// recomputes it from the key its dispatch carried, and no one learns the key.
func WithdrawKey(key, node string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte("fedmesh withdraw\x00" + node + "\x00" + key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
