package router

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A node sees the reply subject of every dispatch it gets and may publish
// on _INBOX.>: the subjects next to its own must not reach another
// dispatch's ack. Tokens are random, so a neighbour is nobody's.
func TestAckTokensUnguessable(t *testing.T) {
	a := newAcks("_INBOX.router.router-1.x")
	const n = 1000
	subjects := map[string]uint64{}
	for range n {
		tok, subj := a.token()
		require.NotZero(t, tok)
		require.True(t, strings.HasPrefix(subj, a.prefix))
		a.put(tok, &placement{}, 1)
		subjects[subj] = tok
	}
	require.Len(t, subjects, n, "a token given twice")
	// what a node that got one dispatch would forge: the tokens around its own
	mine, _ := a.token()
	forged := 0
	for d := uint64(1); d <= 5000; d++ {
		for _, tok := range []uint64{mine + d, mine - d} {
			if _, ok := a.take(a.prefix + strconv.FormatUint(tok, 36)); ok {
				forged++
			}
		}
	}
	assert.Zero(t, forged, "acks forged from a neighbouring token")
	// the real ones still reach their dispatch, once
	for subj := range subjects {
		_, ok := a.take(subj)
		assert.True(t, ok, subj)
		_, ok = a.take(subj)
		assert.False(t, ok, "%s taken twice", subj)
	}
}
