package simserver

import (
	"errors"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzSimDecodeRequest feeds any body to the request decoders (chat,
// completions, embeddings) and plans the answer of what they accept: a
// body is either refused with a 4xx apiError or becomes a request whose
// answer fits the model's context.
func FuzzSimDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`))
	f.Add([]byte(`{"prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true}}`))
	f.Add([]byte(`{"input":["a","b"]}`))
	s, err := New(Config{Profile: Profile{MaxModelLen: 512, KVBlocks: 64}})
	require.NoError(f, err)
	refused := func(t *testing.T, err error) {
		var ae *apiError
		require.True(t, errors.As(err, &ae), "not an apiError: %v", err)
		assert.GreaterOrEqual(t, ae.status, http.StatusBadRequest)
		assert.Less(t, ae.status, http.StatusInternalServerError)
		assert.NotEmpty(t, ae.msg)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, kind := range []string{kindChat, kindCompletion} {
			r, err := decodeGenerate(kind, body)
			if err != nil {
				refused(t, err)
				continue
			}
			assert.GreaterOrEqual(t, r.maxTokens, 0)
			if kind == kindChat {
				assert.NotEmpty(t, r.tokens, "the template alone has tokens")
			}
			plan, err := s.plan(r)
			if err != nil {
				refused(t, err)
				continue
			}
			assert.NotEmpty(t, plan.tokens)
			assert.LessOrEqual(t, len(r.tokens)+len(plan.tokens), s.cfg.Profile.MaxModelLen)
			if r.maxTokens > 0 {
				assert.LessOrEqual(t, len(plan.tokens), r.maxTokens)
			}
			assert.Contains(t, []string{FinishStop, FinishLength}, plan.reason)
		}
		e, err := decodeEmbed(body)
		if err != nil {
			refused(t, err)
			return
		}
		assert.NotEmpty(t, e.inputs)
		assert.LessOrEqual(t, len(e.inputs), maxEmbedInputs)
	})
}
