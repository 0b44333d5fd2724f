package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// textRequest is what the gateway reads of a chat or completions body; the
// body itself goes to the node unchanged (wire/payloads.go: generate, code).
type textRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// parseTextRequest decodes the routing-relevant fields of a chat or
// completions body. It must be a JSON object.
func parseTextRequest(b []byte) (textRequest, error) {
	var tr textRequest
	if err := json.Unmarshal(b, &tr); err != nil {
		return tr, invalid(wire.CodeBadRequest, "request body is not a valid JSON object: %v", err)
	}
	return tr, nil
}

// textCapability picks generate or code: X-Fed-Capability may ask for code
// (a code model served behind the chat API); anything else is a 400.
func textCapability(r *http.Request) (string, error) {
	switch v := r.Header.Get("X-Fed-Capability"); v {
	case "", wire.CapGenerate:
		return wire.CapGenerate, nil
	case wire.CapCode:
		return wire.CapCode, nil
	default:
		return "", invalid(wire.CodeBadRequest, "header X-Fed-Capability: %q is not generate or code", clip(v, wire.MaxIDLen))
	}
}

// textFormat is the OpenAI shape of one text endpoint.
type textFormat struct {
	idPrefix    string
	object      string
	chunkObject string
	whole       func(text string) any             // one choice of the full answer
	delta       func(text string, first bool) any // one choice of a chunk
	finish      func() any                        // the last choice, finish_reason stop
}

var chatFormat = textFormat{
	idPrefix: "chatcmpl-", object: "chat.completion", chunkObject: "chat.completion.chunk",
	whole: func(text string) any {
		return map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text, "refusal": nil},
			"logprobs": nil, "finish_reason": "stop"}
	},
	delta: func(text string, first bool) any {
		d := map[string]any{"content": text}
		if first {
			d["role"] = "assistant"
		}
		return map[string]any{"index": 0, "delta": d, "logprobs": nil, "finish_reason": nil}
	},
	finish: func() any {
		return map[string]any{"index": 0, "delta": map[string]any{}, "logprobs": nil, "finish_reason": "stop"}
	},
}

var completionFormat = textFormat{
	idPrefix: "cmpl-", object: "text_completion", chunkObject: "text_completion",
	whole: func(text string) any {
		return map[string]any{"index": 0, "text": text, "logprobs": nil, "finish_reason": "stop"}
	},
	delta: func(text string, _ bool) any {
		return map[string]any{"index": 0, "text": text, "logprobs": nil, "finish_reason": nil}
	},
	finish: func() any {
		return map[string]any{"index": 0, "text": "", "logprobs": nil, "finish_reason": "stop"}
	},
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// tokensUsage reports the node's Fed-Tokens as completion tokens; nodes do
// not report prompt tokens.
func tokensUsage(n int) usage { return usage{CompletionTokens: n, TotalTokens: n} }

type textObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []any  `json:"choices"`
	Usage   *usage `json:"usage,omitempty"`
}

func (s *Service) chat(w http.ResponseWriter, r *http.Request, c caller) {
	s.text(w, r, c, chatFormat)
}

func (s *Service) completions(w http.ResponseWriter, r *http.Request, c caller) {
	s.text(w, r, c, completionFormat)
}

func (s *Service) text(w http.ResponseWriter, r *http.Request, c caller, f textFormat) {
	capability, err := textCapability(r)
	if err != nil {
		s.fail(w, c, c.request(), "", err)
		return
	}
	var tr textRequest
	body, err := s.readJSON(r, c, &tr)
	if err != nil {
		s.fail(w, c, c.request(), "", err)
		return
	}
	defer body.discard()
	x := s.begin(w, r, c, tr.Model, capability)
	if x == nil {
		return
	}
	defer x.cancel()
	body.into(&x.req)
	if tr.Stream {
		s.streamText(w, x, f, tr.Model, tr.StreamOptions != nil && tr.StreamOptions.IncludeUsage)
		return
	}
	resp := x.infer(w)
	if resp == nil {
		return
	}
	u := tokensUsage(resp.Tokens)
	w.Header().Set(hdrTokens, itoa(resp.Tokens))
	writeJSON(w, http.StatusOK, textObject{ID: f.idPrefix + x.req.RequestID, Object: f.object, Created: time.Now().Unix(),
		Model: modelName(tr.Model, resp.Header.Get(wire.HdrModel)), Choices: []any{f.whole(string(resp.Body))}, Usage: &u})
	x.ok(http.StatusOK, resp.Node, resp.Tokens)
}

// streamText relays the mesh's chunks as SSE. Headers wait for the first
// chunk, so a request the mesh refuses still gets its HTTP error status.
func (s *Service) streamText(w http.ResponseWriter, x *exchange, f textFormat, model string, includeUsage bool) {
	stop := context.AfterFunc(s.streams, x.cancel)
	defer stop()
	st, err := s.cl.InferStream(x.ctx, x.req)
	if err != nil {
		s.fail(w, x.c, x.req, "", err)
		return
	}
	defer st.Close() // cancels in the mesh unless the stream finished
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	ts := &textStream{x: x, w: w, sse: newSSE(w), f: f, id: f.idPrefix + x.req.RequestID,
		created: time.Now().Unix(), model: model, first: true}
	// The SDK yields chunks of one node and ends after one final; whatever
	// the mesh sends later is dropped there (late_messages_total), so the
	// stream ends in exactly one terminal event: [DONE] or one error.
	for ch, err := range st.Chunks() {
		if err != nil {
			ts.fail(err)
			return
		}
		// coalesce: while more chunks already wait, write without flushing
		ts.sse.hold = st.Pending() > 0
		err := ts.relay(ch)
		ts.sse.hold = false
		if err != nil {
			// The client is gone: leaving the loop lets Close cancel the request.
			ts.ended = true
			s.record(x.c, x.req, ts.node, &wire.Error{Code: wire.CodeCanceled, Description: "write to client: " + err.Error(), RequestID: x.req.RequestID}, x.ttft)
			return
		}
	}
	res, err := st.Result()
	if err != nil { // Chunks already yielded it; unreachable but cheap
		ts.fail(err)
		return
	}
	ts.finish(res, includeUsage)
}

// textStream is one chat or completions answer on its way out as SSE.
type textStream struct {
	x       *exchange
	w       http.ResponseWriter
	sse     *sseWriter
	f       textFormat
	id      string
	created int64
	model   string
	node    string // the node whose chunks these are, once the first came
	carry   []byte // the start of a character the last chunk cut in two
	first   bool   // no delta written yet: the next one carries the role
	ended   bool   // the terminal event ([DONE] or an error) is out, or the client is gone
}

// relay writes one mesh chunk as an SSE chunk, starting the response at the
// first. An error means the client is gone.
func (ts *textStream) relay(ch client.Chunk) error {
	if !ts.sse.started {
		ts.node = ch.Node
		ts.x.ttft = time.Since(ts.x.c.start)
		ts.begin(ts.node)
	}
	var text []byte
	text, ts.carry = splitIncompleteUTF8(append(ts.carry, ch.Data...))
	if len(text) == 0 && !ts.first {
		return nil
	}
	if err := ts.choice(ts.f.delta(string(text), ts.first)); err != nil {
		return err
	}
	ts.first = false
	return nil
}

// fail ends the stream with err: as the HTTP error when nothing was sent
// yet, else as a final error event (the SDKs raise an APIError on it).
func (ts *textStream) fail(err error) {
	if ts.ended {
		return
	}
	ts.ended = true
	x := ts.x
	f := classify(err, x.c.requestID)
	if x.s.streams.Err() != nil && f.Code == wire.CodeCanceled {
		f = classify(shuttingDown(), x.c.requestID)
	}
	if !ts.sse.started {
		x.s.fail(ts.w, x.c, x.req, ts.node, f.Error)
		return
	}
	_ = ts.sse.data(x.s.errorBody(f, x.req.Model))
	x.s.record(x.c, x.req, ts.node, f.Error, x.ttft)
}

// finish writes what is left after the last chunk: held-back bytes, the
// finish_reason chunk, usage when asked for, and [DONE].
func (ts *textStream) finish(res *client.Response, includeUsage bool) {
	if ts.ended {
		return
	}
	ts.ended = true
	if !ts.sse.started {
		ts.begin(res.Node)
	}
	if ts.first || len(ts.carry) > 0 {
		_ = ts.choice(ts.f.delta(string(ts.carry), ts.first))
	}
	_ = ts.choice(ts.f.finish())
	if includeUsage {
		u := tokensUsage(res.Tokens)
		_ = ts.sse.data(ts.object([]any{}, &u))
	}
	_ = ts.sse.done()
	ts.x.ok(http.StatusOK, res.Node, res.Tokens)
}

func (ts *textStream) begin(node string) {
	ts.w.Header().Set(hdrNode, node)
	ts.sse.start()
}

func (ts *textStream) choice(c any) error { return ts.sse.data(ts.object([]any{c}, nil)) }

func (ts *textStream) object(choices []any, u *usage) textObject {
	return textObject{ID: ts.id, Object: ts.f.chunkObject, Created: ts.created, Model: ts.model, Choices: choices, Usage: u}
}

// modelName is what the answer says served it: the asked model, or the
// node's when the caller let the mesh choose.
func modelName(asked, served string) string {
	if asked != "" {
		return asked
	}
	if served != "" {
		return served
	}
	return "fedmesh"
}
