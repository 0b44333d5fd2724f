package wire

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestWithdrawKey(t *testing.T) {
	k := "c2VjcmV0LWtleS0xMjM0NQ"
	a1, a2, b := WithdrawKey(k, "n1"), WithdrawKey(k, "n1"), WithdrawKey(k, "n2")
	assert.Equal(t, a1, a2, "the serving node recomputes it")
	assert.NotEqual(t, a1, b, "one node's withdrawal key withdraws no other's attempt")
	assert.NotEqual(t, a1, WithdrawKey(k+"x", "n1"), "another request's")
	assert.NotContains(t, a1, k)
	assert.Len(t, a1, 43)
	assert.LessOrEqual(t, len(a1), MaxCancelKeyLen)
	assert.Empty(t, WithdrawKey("", "n1"), "a request without a key: its withdrawals carry none either")
	// the node id and key are separated: ("n1", "2x") is not ("n12", "x")
	assert.NotEqual(t, WithdrawKey("2x", "n1"), WithdrawKey("x", "n12"))
}
