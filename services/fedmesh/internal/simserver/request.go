package simserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Kinds of generation request.
const (
	kindChat       = "chat"
	kindCompletion = "completion"
)

// apiError is an error answer: its HTTP status and the OpenAI error body.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// errType is the OpenAI error type of a status.
func errType(status int) string {
	switch status {
	case http.StatusNotFound:
		return "NotFoundError"
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusMethodNotAllowed:
		return "BadRequestError"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailableError"
	}
	return "InternalServerError"
}

// genRequest is a decoded chat or completions request.
type genRequest struct {
	kind   string
	model  string
	tokens []uint64
	// maxTokens is max_tokens (max_completion_tokens for chat); 0 = absent.
	maxTokens int
	ignoreEOS bool
	stream    bool
	// includeUsage adds the usage chunk at the end of a stream;
	// continuousUsage adds usage to every chunk (vLLM's extension).
	includeUsage, continuousUsage bool
	seed                          uint64 // the request's "seed", mixed into the answer
}

// wireGen is the JSON of a chat or completions request: the fields the
// simulator acts on. Sampling fields (temperature, top_p, …) are accepted
// and ignored: the answer is a function of the seed and the prompt.
type wireGen struct {
	Model               string          `json:"model"`
	Messages            []wireMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage         bool `json:"include_usage"`
		ContinuousUsageStats bool `json:"continuous_usage_stats"`
	} `json:"stream_options"`
	N                    *int   `json:"n"`
	Seed                 *int64 `json:"seed"`
	IgnoreEOS            bool   `json:"ignore_eos"`
	Echo                 bool   `json:"echo"`
	AddGenerationPrompt  *bool  `json:"add_generation_prompt"`
	ContinueFinalMessage bool   `json:"continue_final_message"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// decodeGenerate reads a chat (kindChat) or completions request body.
func decodeGenerate(kind string, body []byte) (*genRequest, error) {
	var w wireGen
	if err := strictObject(body, &w); err != nil {
		return nil, err
	}
	r := &genRequest{kind: kind, model: w.Model, stream: w.Stream, ignoreEOS: w.IgnoreEOS}
	if w.Seed != nil {
		r.seed = uint64(*w.Seed) + 1 // 0 stays "no seed given"
	}
	if w.N != nil && *w.N != 1 {
		return nil, badRequest("n must be 1 (simserver answers one choice per request), got %d", *w.N)
	}
	if w.StreamOptions != nil {
		if !w.Stream {
			return nil, badRequest("stream_options can only be defined when stream=true")
		}
		r.includeUsage, r.continuousUsage = w.StreamOptions.IncludeUsage, w.StreamOptions.ContinuousUsageStats
	}
	limit := w.MaxTokens
	if kind == kindChat && w.MaxCompletionTokens != nil {
		limit = w.MaxCompletionTokens
	}
	if limit != nil {
		if *limit < 1 {
			return nil, badRequest("max_tokens must be at least 1, got %d", *limit)
		}
		r.maxTokens = *limit
	}
	if w.Echo {
		return nil, badRequest("echo is not supported by simserver")
	}
	var err error
	switch kind {
	case kindChat:
		if w.Prompt != nil {
			return nil, badRequest("a chat request has \"messages\", not \"prompt\"")
		}
		var text string
		if text, err = renderChat(w); err == nil {
			r.tokens = tokenize(text)
		}
	default:
		if w.Messages != nil {
			return nil, badRequest("a completions request has \"prompt\", not \"messages\"")
		}
		r.tokens, err = promptTokens(w.Prompt, "prompt")
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// strictObject decodes a JSON object, naming what is wrong with it.
func strictObject(body []byte, v any) error {
	t := bytes.TrimSpace(body)
	if len(t) == 0 || t[0] != '{' {
		return badRequest("the body must be a JSON object")
	}
	if err := json.Unmarshal(t, v); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	return nil
}

// Chat template markers: a simple template of the ChatML kind. Only the
// token counts and prefixes it makes matter.
const (
	tmplStart = "<|"
	tmplRole  = "|>\n"
	tmplEnd   = "<|end|>\n"
)

// renderChat applies the chat template. With continue_final_message the
// last message must be the assistant's and stays open (no end marker, no
// generation prompt), so the answer continues it: vLLM's extension, which
// node agents use to continue a stream another node lost.
func renderChat(w wireGen) (string, error) {
	if len(w.Messages) == 0 {
		return "", badRequest("messages must be a non-empty array")
	}
	addGen := w.AddGenerationPrompt == nil || *w.AddGenerationPrompt
	if w.ContinueFinalMessage {
		if addGen {
			return "", badRequest("cannot set both continue_final_message and add_generation_prompt to true")
		}
		if last := w.Messages[len(w.Messages)-1]; last.Role != "assistant" {
			return "", badRequest("continue_final_message needs the last message to be the assistant's, not %q", last.Role)
		}
	}
	var b strings.Builder
	for i, m := range w.Messages {
		if m.Role == "" || strings.ContainsAny(m.Role, "<|>\n") {
			return "", badRequest("messages[%d].role %q: want a role name", i, m.Role)
		}
		content, err := messageText(m.Content, i)
		if err != nil {
			return "", err
		}
		b.WriteString(tmplStart + m.Role + tmplRole + content)
		if !w.ContinueFinalMessage || i < len(w.Messages)-1 {
			b.WriteString(tmplEnd)
		}
	}
	if addGen {
		b.WriteString(tmplStart + "assistant" + tmplRole)
	}
	return b.String(), nil
}

// messageText is a message's content: a string, null, or text parts.
func messageText(raw json.RawMessage, i int) (string, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(t, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(t, &parts); err != nil {
		return "", badRequest("messages[%d].content: want a string or an array of text parts", i)
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", badRequest("messages[%d].content[%d]: simserver takes text parts only, got type %q", i, j, p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// promptTokens reads a prompt: a string, token ids, or a list of one of
// either.
func promptTokens(raw json.RawMessage, field string) ([]uint64, error) {
	all, err := inputs(raw, field)
	if err != nil {
		return nil, err
	}
	if len(all) != 1 {
		return nil, badRequest("%s: simserver answers one prompt per request, got %d", field, len(all))
	}
	return all[0], nil
}

// inputs reads a string, a list of strings, token ids, or a list of token
// id lists, as the tokens of each input.
func inputs(raw json.RawMessage, field string) ([][]uint64, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, badRequest("%s is required", field)
	}
	var s string
	if json.Unmarshal(t, &s) == nil {
		return [][]uint64{tokenize(s)}, nil
	}
	var ids []uint64
	if json.Unmarshal(t, &ids) == nil && len(ids) > 0 {
		return [][]uint64{ids}, nil
	}
	var ss []string
	if json.Unmarshal(t, &ss) == nil && len(ss) > 0 {
		out := make([][]uint64, len(ss))
		for i, s := range ss {
			out[i] = tokenize(s)
		}
		return out, nil
	}
	var lists [][]uint64
	if json.Unmarshal(t, &lists) == nil && len(lists) > 0 {
		return lists, nil
	}
	return nil, badRequest("%s: want a string, a list of strings, or token ids", field)
}

// embedRequest is a decoded embeddings request: one prompt per input.
type embedRequest struct {
	model  string
	inputs [][]uint64
}

// maxEmbedInputs bounds the inputs of one embeddings request.
const maxEmbedInputs = 2048

func decodeEmbed(body []byte) (*embedRequest, error) {
	var w struct {
		Model          string          `json:"model"`
		Input          json.RawMessage `json:"input"`
		EncodingFormat string          `json:"encoding_format"`
	}
	if err := strictObject(body, &w); err != nil {
		return nil, err
	}
	if w.EncodingFormat != "" && w.EncodingFormat != "float" {
		return nil, badRequest("encoding_format %q: simserver answers float only", w.EncodingFormat)
	}
	in, err := inputs(w.Input, "input")
	if err != nil {
		return nil, err
	}
	if len(in) > maxEmbedInputs {
		return nil, badRequest("input: at most %d inputs, got %d", maxEmbedInputs, len(in))
	}
	return &embedRequest{model: w.Model, inputs: in}, nil
}
