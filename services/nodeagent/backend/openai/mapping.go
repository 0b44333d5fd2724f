package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// httpCall is one HTTP call to the server and how to read its answer.
type httpCall struct {
	path        string
	body        io.Reader
	contentType string
	sse         bool
	read        func(resp *http.Response, body io.Reader, emit func([]byte) error) (backend.Result, error)
}

func badRequest(format string, args ...any) error {
	return wire.Errorf(wire.CodeBadRequest, format, args...)
}

// upstream is the server's name for a fedmesh model id.
func (b *Backend) upstream(model string) string {
	if n, ok := b.cfg.ModelNames[model]; ok && n != "" {
		return n
	}
	return model
}

// jsonBody returns the request body as a JSON object when it is one (the
// OpenAI body, passed through), or nil when it is plain text.
func jsonBody(body []byte) (map[string]json.RawMessage, error) {
	t := bytes.TrimSpace(body)
	if len(t) == 0 || t[0] != '{' {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(t, &m); err != nil {
		return nil, badRequest("body starts like JSON but is not a JSON object: %v", err)
	}
	return m, nil
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func (b *Backend) build(call backend.Call) (*httpCall, error) {
	if c := call.Continue; c != nil {
		switch {
		case call.Capability != wire.CapGenerate && call.Capability != wire.CapCode:
			return nil, badRequest("backend openai: cannot continue a %s answer", call.Capability)
		case !b.cfg.Continue:
			return nil, badRequest("backend openai: cannot continue a %s answer: the server is not configured to (backend.continue)", call.Capability)
		case !utf8.Valid(c.Text):
			return nil, badRequest("backend openai: cannot continue a %s answer: the text so far is not UTF-8", call.Capability)
		}
	}
	obj, err := jsonBody(call.Body)
	if err != nil {
		return nil, err
	}
	model := raw(b.upstream(call.Model))
	switch call.Capability {
	case wire.CapGenerate, wire.CapCode:
		return b.buildText(call, obj, model)
	case wire.CapEmbed:
		if obj == nil {
			obj = map[string]json.RawMessage{"input": raw(string(call.Body))}
		}
		obj["model"] = model
		return jsonCall("/embeddings", obj, false, readWhole)
	case wire.CapImagegen:
		if obj == nil {
			obj = map[string]json.RawMessage{"prompt": raw(string(call.Body))}
		}
		obj["model"] = model
		return jsonCall("/images/generations", obj, false, readWhole)
	case wire.CapSynthesize:
		if obj == nil {
			obj = map[string]json.RawMessage{"input": raw(string(call.Body)), "voice": raw(b.cfg.Voice)}
		}
		obj["model"] = model
		return jsonCall("/audio/speech", obj, false, readBytes)
	case wire.CapTranscribe:
		return b.buildTranscribe(call)
	}
	return nil, wire.Errorf(wire.CodeNotFound, "backend openai has no endpoint for capability %q", call.Capability)
}

func jsonCall(path string, obj map[string]json.RawMessage, sse bool,
	read func(*http.Response, io.Reader, func([]byte) error) (backend.Result, error)) (*httpCall, error) {
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, badRequest("encode body: %v", err)
	}
	return &httpCall{path: path, body: bytes.NewReader(body), contentType: "application/json", sse: sse, read: read}, nil
}

// buildText: a JSON body with "messages" goes to chat completions, with
// "prompt" to completions; plain text becomes one user message (or a prompt
// with Config.Completions). "model" is the node's model.
func (b *Backend) buildText(call backend.Call, obj map[string]json.RawMessage, model json.RawMessage) (*httpCall, error) {
	path := "/chat/completions"
	switch {
	case obj == nil && b.cfg.Completions:
		obj = map[string]json.RawMessage{"prompt": raw(string(call.Body))}
		path = "/completions"
	case obj == nil:
		obj = map[string]json.RawMessage{"messages": raw([]map[string]string{{"role": "user", "content": string(call.Body)}})}
	case obj["messages"] != nil:
	case obj["prompt"] != nil:
		path = "/completions"
	default:
		return nil, badRequest("JSON body for %s has neither \"messages\" nor \"prompt\"", call.Capability)
	}
	if c := call.Continue; c != nil && len(c.Text) > 0 {
		var err error
		if path == "/completions" {
			err = continuePrompt(obj, c.Text)
		} else {
			err = continueChat(obj, c.Text)
		}
		if err != nil {
			return nil, err
		}
	}
	obj["model"] = model
	// Stream from the server only when the client streams. A whole answer
	// asked for whole is one JSON decode instead of one per token; the
	// server then sends its headers only when done, so, as for the other
	// whole answers, the request deadline bounds that wait, not
	// StallTimeout (which would cut any generation longer than it).
	obj["stream"] = raw(call.Stream)
	if !call.Stream {
		delete(obj, "stream_options") // vLLM rejects it without "stream": true
	}
	return jsonCall(path, obj, call.Stream, readText)
}

// continueChat makes the chat request continue the answer so far (vLLM's
// and SGLang's extension): the text becomes a final assistant message the
// model carries on, without a new generation prompt. The server then
// answers only the continuation. A request that already ends in an
// assistant prefill it continues gets the text appended to that message.
func continueChat(obj map[string]json.RawMessage, text []byte) error {
	var msgs []json.RawMessage
	if err := json.Unmarshal(obj["messages"], &msgs); err != nil || len(msgs) == 0 {
		return badRequest("cannot continue: \"messages\" is not a non-empty array")
	}
	if n, ok := nChoices(obj); !ok || n != 1 {
		return badRequest("cannot continue an answer with more than one choice (\"n\")")
	}
	appended := false
	if isTrue(obj["continue_final_message"]) {
		var last struct {
			Role    string           `json:"role"`
			Content *json.RawMessage `json:"content"`
		}
		var content string
		if json.Unmarshal(msgs[len(msgs)-1], &last) == nil && last.Role == "assistant" &&
			last.Content != nil && json.Unmarshal(*last.Content, &content) == nil {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(msgs[len(msgs)-1], &m); err == nil {
				m["content"] = raw(content + string(text))
				msgs[len(msgs)-1] = raw(m)
				appended = true
			}
		}
	}
	if !appended {
		msgs = append(msgs, raw(map[string]string{"role": "assistant", "content": string(text)}))
	}
	obj["messages"] = raw(msgs)
	obj["continue_final_message"] = raw(true)
	obj["add_generation_prompt"] = raw(false) // vLLM: not with continue_final_message
	delete(obj, "echo")                       // echo would send the text so far again
	return nil
}

// continuePrompt appends the text so far to a completions prompt (one
// string, or a list of one); the server continues the prompt, so it
// answers only what follows.
func continuePrompt(obj map[string]json.RawMessage, text []byte) error {
	if n, ok := nChoices(obj); !ok || n != 1 {
		return badRequest("cannot continue an answer with more than one choice (\"n\")")
	}
	var p string
	var ps []string
	switch {
	case json.Unmarshal(obj["prompt"], &p) == nil:
		obj["prompt"] = raw(p + string(text))
	case json.Unmarshal(obj["prompt"], &ps) == nil && len(ps) == 1:
		obj["prompt"] = raw([]string{ps[0] + string(text)})
	default:
		return badRequest("cannot continue a completion whose \"prompt\" is not one string")
	}
	delete(obj, "echo") // echo would send the prompt, now with the text so far, again
	return nil
}

// nChoices is the body's "n" (1 when absent); ok is false when it is not a
// number.
func nChoices(obj map[string]json.RawMessage) (int, bool) {
	v, ok := obj["n"]
	if !ok || string(bytes.TrimSpace(v)) == "null" {
		return 1, true
	}
	var n float64
	if json.Unmarshal(v, &n) != nil {
		return 0, false
	}
	return int(n), n == float64(int(n))
}

func isTrue(v json.RawMessage) bool {
	var b bool
	return json.Unmarshal(v, &b) == nil && b
}

func (b *Backend) buildTranscribe(call backend.Call) (*httpCall, error) {
	var p wire.TranscribeParams
	if len(bytes.TrimSpace(call.Params)) > 0 {
		if err := json.Unmarshal(call.Params, &p); err != nil {
			return nil, badRequest("header %s is not the transcription parameters JSON: %v", wire.HdrParams, err)
		}
	}
	if p.Filename == "" {
		p.Filename = "audio"
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", p.Filename)
	if err == nil {
		_, err = fw.Write(call.Body)
	}
	fields := [][2]string{{"model", b.upstream(call.Model)}, {"language", p.Language}, {"prompt", p.Prompt},
		{"response_format", p.ResponseFormat}, {"temperature", p.Temperature}}
	for _, f := range fields {
		if err == nil && f[1] != "" {
			err = mw.WriteField(f[0], f[1])
		}
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "build transcription form: %v", err)
	}
	return &httpCall{path: "/audio/transcriptions", body: &buf, contentType: mw.FormDataContentType(), read: readWhole}, nil
}

// usage is the token count block of an OpenAI answer.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// apiError is the error body, in the shapes servers use: OpenAI and vLLM
// {"error":{"message",…}}, TGI {"error":"…"}, some {"message":"…"}.
type apiError struct {
	Error   json.RawMessage `json:"error"`
	Message string          `json:"message"`
}

func (e *apiError) text() string {
	if len(e.Error) > 0 {
		var s string
		if json.Unmarshal(e.Error, &s) == nil {
			return s
		}
		var o struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &o) == nil && o.Message != "" {
			return o.Message
		}
		return string(e.Error)
	}
	return e.Message
}

// chunk is one chat or completions answer (streamed delta or whole).
type chunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
	apiError
}

func isSSE(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// readText reads a chat/completions answer and emits its text: each delta
// as it arrives for a stream, the whole text at once otherwise.
func readText(resp *http.Response, body io.Reader, emit func([]byte) error) (backend.Result, error) {
	if !isSSE(resp) {
		return readWholeText(body, emit)
	}
	return readTextStream(body, emit)
}

// readWholeText reads a whole chat/completions JSON answer.
func readWholeText(body io.Reader, emit func([]byte) error) (backend.Result, error) {
	data, err := readLimited(body, maxWholeBody)
	if err != nil {
		return backend.Result{}, err
	}
	var c chunk
	if err := json.Unmarshal(data, &c); err != nil {
		return backend.Result{}, fmt.Errorf("answer is not JSON: %w", err)
	}
	if msg := c.text(); msg != "" {
		return backend.Result{}, wire.Errorf(wire.CodeInternal, "backend error: %s", msg)
	}
	var text string
	if len(c.Choices) > 0 {
		text = c.Choices[0].Message.Content + c.Choices[0].Text
	}
	res := backend.Result{Tokens: len(strings.Fields(text))}
	if c.Usage != nil && c.Usage.CompletionTokens > 0 {
		res.Tokens = c.Usage.CompletionTokens
	}
	return res, emit([]byte(text))
}

// answeredError is an error the server reported inside a 2xx answer: its
// answer is over, so the connection can be drained and kept.
type answeredError struct{ err error }

func (e *answeredError) Error() string { return e.err.Error() }
func (e *answeredError) Unwrap() error { return e.err }

// readTextStream emits each SSE delta as it arrives, until [DONE] (or a
// finish_reason and the end of the body).
func readTextStream(body io.Reader, emit func([]byte) error) (backend.Result, error) {
	r := NewSSEReader(body)
	var res backend.Result
	deltas, finished := 0, false
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) && finished {
				return count(res, deltas), nil // ended cleanly without [DONE]
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return count(res, deltas), errors.New("stream ended before data: [DONE] (connection dropped)")
			}
			return count(res, deltas), fmt.Errorf("stream broken: %w", err)
		}
		if string(bytes.TrimSpace(ev.Data)) == "[DONE]" {
			return count(res, deltas), nil
		}
		var c chunk
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			return count(res, deltas), fmt.Errorf("stream event is not JSON: %w", err)
		}
		if msg := c.text(); msg != "" || ev.Type == "error" {
			if msg == "" {
				msg = string(ev.Data)
			}
			return count(res, deltas), &answeredError{wire.Errorf(wire.CodeInternal, "backend error mid-stream: %s", msg)}
		}
		if c.Usage != nil && c.Usage.CompletionTokens > 0 {
			res.Tokens = c.Usage.CompletionTokens
		}
		for _, ch := range c.Choices {
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				finished = true
			}
			if t := ch.Delta.Content + ch.Text; t != "" {
				deltas++
				if err := emit([]byte(t)); err != nil {
					return count(res, deltas), err
				}
			}
		}
	}
}

// count falls back to the number of deltas when the server sent no usage.
func count(res backend.Result, deltas int) backend.Result {
	if res.Tokens == 0 {
		res.Tokens = deltas
	}
	return res
}

// readWhole emits the JSON answer as it is (embeddings, images,
// transcriptions); tokens come from its usage block when there is one.
func readWhole(_ *http.Response, body io.Reader, emit func([]byte) error) (backend.Result, error) {
	data, err := readLimited(body, maxWholeBody)
	if err != nil {
		return backend.Result{}, err
	}
	var u struct {
		Usage *usage `json:"usage"`
	}
	var res backend.Result
	if json.Unmarshal(data, &u) == nil && u.Usage != nil {
		res.Tokens = max(u.Usage.CompletionTokens, u.Usage.TotalTokens)
	}
	return res, emit(data)
}

// readBytes forwards a binary answer (speech audio) as it arrives.
func readBytes(resp *http.Response, body io.Reader, emit func([]byte) error) (backend.Result, error) {
	res := backend.Result{ContentType: resp.Header.Get("Content-Type")}
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if eerr := emit(buf[:n]); eerr != nil {
				return res, eerr
			}
		}
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("audio stream broken: %w", err)
		}
	}
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("answer larger than %d bytes", limit)
	}
	return data, nil
}

// httpError turns a non-2xx answer into the wire code a client should see.
func httpError(resp *http.Response, path string) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e apiError
	msg := ""
	if json.Unmarshal(data, &e) == nil {
		msg = e.text()
	}
	if msg == "" {
		msg = strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
	}
	return wire.Errorf(codeForStatus(resp.StatusCode), "backend openai %s: HTTP %d: %s", path, resp.StatusCode, msg)
}

// codeForStatus maps the server's HTTP status to a fedmesh code. Auth
// failures are the node's misconfiguration, so the client sees 500.
func codeForStatus(st int) int {
	switch st {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
		return wire.CodeBadRequest
	case http.StatusNotFound:
		return wire.CodeNotFound
	case http.StatusTooManyRequests:
		return wire.CodeOverloaded
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return wire.CodeNoCapacity
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return wire.CodeTimeout
	}
	return wire.CodeInternal
}
