package simserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// usage is the OpenAI token count block.
type usage struct {
	PromptTokens        int           `json:"prompt_tokens"`
	TotalTokens         int           `json:"total_tokens"`
	CompletionTokens    int           `json:"completion_tokens"`
	PromptTokensDetails *promptDetail `json:"prompt_tokens_details,omitempty"`
}

type promptDetail struct {
	CachedTokens int `json:"cached_tokens"`
}

func newUsage(prompt, completion, cached int) *usage {
	return &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
		PromptTokensDetails: &promptDetail{CachedTokens: cached}}
}

type message struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type choice struct {
	Index        int      `json:"index"`
	Message      *message `json:"message,omitempty"` // whole chat answer
	Delta        *message `json:"delta,omitempty"`   // chat stream chunk
	Text         *string  `json:"text,omitempty"`    // completions
	Logprobs     any      `json:"logprobs"`
	FinishReason *string  `json:"finish_reason"`
}

type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

// objects of each kind's answers: whole, and stream chunk.
var objects = map[string][2]string{
	kindChat:       {"chat.completion", "chat.completion.chunk"},
	kindCompletion: {"text_completion", "text_completion"},
}

// answerPlan is what a request will get: its tokens' text and why it ends.
type answerPlan struct {
	tokens []string
	reason string
}

// plan decides a request's answer: its length is the model's own (from
// the seed and the prompt, around Profile.OutputTokens) unless max_tokens
// (or the room left in max_model_len) cuts it, or ignore_eos asks for all
// of max_tokens; its words come from the same seed.
func (s *Server) plan(r *genRequest) (answerPlan, error) {
	p := s.cfg.Profile
	if len(r.tokens) < 1 {
		return answerPlan{}, badRequest("the prompt is empty")
	}
	room := p.MaxModelLen - len(r.tokens)
	if room < 1 || r.maxTokens > room {
		return answerPlan{}, badRequest("this model's maximum context length is %d tokens; the request has %d in the prompt and asks for %d more",
			p.MaxModelLen, len(r.tokens), max(r.maxTokens, 1))
	}
	limit := room
	if r.maxTokens > 0 {
		limit = r.maxTokens
	}
	seed := mix(mix(s.cfg.Seed, promptHash(r.tokens)), r.seed)
	n, reason := answerLength(seed, p.OutputTokens), FinishStop
	if r.ignoreEOS || n >= limit {
		n, reason = limit, FinishLength
	}
	return answerPlan{tokens: answer(seed, n), reason: reason}, nil
}

// served is the model name a request is answered as.
func (s *Server) served(model string) (string, error) {
	if model == "" {
		return s.cfg.Models[0], nil
	}
	if slices.Contains(s.cfg.Models, model) {
		return model, nil
	}
	return "", &apiError{status: http.StatusNotFound, msg: fmt.Sprintf("The model `%s` does not exist.", model)}
}

func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%s-%016x", prefix, mix(s.cfg.Seed, s.ids.Add(1)))
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("the body is larger than %d bytes", maxBody)}
		}
		return nil, badRequest("read body: %v", err)
	}
	return body, nil
}

// generate answers chat or completions requests.
func (s *Server) generate(kind string) func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		req, err := decodeGenerate(kind, body)
		if err != nil {
			writeError(w, err)
			return
		}
		model, err := s.served(req.model)
		if err != nil {
			writeError(w, err)
			return
		}
		plan, err := s.plan(req)
		if err != nil {
			writeError(w, err)
			return
		}
		st := newStream()
		sq, err := s.submit(req.tokens, len(plan.tokens), plan.reason, st)
		if err != nil {
			writeError(w, err)
			return
		}
		defer s.cancel(sq) // a client gone before the end frees its slot
		prefix := "cmpl"
		if kind == kindChat {
			prefix = "chatcmpl"
		}
		c := completion{ID: s.newID(prefix), Created: time.Now().Unix(), Model: model}
		if req.stream {
			if ev, ok := s.streamAnswer(ctx, w, req, c, plan, st); ok {
				s.logDone(c, req, ev)
			}
			return
		}
		ev, ok := st.wait(ctx)
		if !ok {
			return // the client is gone: nobody to answer
		}
		s.logDone(c, req, ev)
		text := strings.Join(plan.tokens, "")
		c.Object = objects[kind][0]
		ch := choice{FinishReason: &ev.reason}
		if kind == kindChat {
			ch.Message = &message{Role: "assistant", Content: &text}
		} else {
			ch.Text = &text
		}
		c.Choices = []choice{ch}
		c.Usage = newUsage(len(req.tokens), ev.gen, ev.cached)
		writeJSON(w, http.StatusOK, c)
	}
}

// streamAnswer sends the answer as server-sent events, one per token, as
// the engine makes them, then the finish reason, the usage when asked
// (stream_options.include_usage) and [DONE].
func (s *Server) streamAnswer(ctx context.Context, w http.ResponseWriter, req *genRequest, c completion, plan answerPlan, st *stream) (event, bool) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	c.Object = objects[req.kind][1]
	// send writes one event: a chunk of choices (none in the usage chunk)
	send := func(u *usage, chs ...choice) error {
		c.Choices, c.Usage = append([]choice{}, chs...), u
		data, err := json.Marshal(c)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "data: %s\n\n", data)
		return err
	}
	piece := func(text string) choice {
		if req.kind == kindChat {
			return choice{Delta: &message{Content: &text}}
		}
		return choice{Text: &text}
	}
	if req.kind == kindChat {
		empty := ""
		if send(nil, choice{Delta: &message{Role: "assistant", Content: &empty}}) != nil || rc.Flush() != nil {
			return event{}, false
		}
	}
	sent := 0
	for {
		ev := st.state()
		for ; sent < ev.gen; sent++ {
			var u *usage
			if req.continuousUsage {
				u = newUsage(len(req.tokens), sent+1, ev.cached)
			}
			if send(u, piece(plan.tokens[sent])) != nil {
				return event{}, false
			}
		}
		if ev.done {
			last := piece("")
			last.FinishReason = &ev.reason
			if req.kind == kindChat {
				last.Delta = &message{}
			}
			var u *usage
			if req.continuousUsage {
				u = newUsage(len(req.tokens), ev.gen, ev.cached)
			}
			if send(u, last) != nil {
				return event{}, false
			}
			if req.includeUsage && send(newUsage(len(req.tokens), ev.gen, ev.cached)) != nil {
				return event{}, false
			}
			_, err := io.WriteString(w, "data: [DONE]\n\n")
			return ev, err == nil && rc.Flush() == nil
		}
		if rc.Flush() != nil {
			return event{}, false
		}
		select {
		case <-st.ready:
		case <-ctx.Done():
			return event{}, false
		}
	}
}

func (s *Server) logDone(c completion, req *genRequest, ev event) {
	s.log.Debug().Str("id", c.ID).Str("model", c.Model).Str("kind", req.kind).Bool("stream", req.stream).
		Int("prompt_tokens", len(req.tokens)).Int("cached_tokens", ev.cached).Int("tokens", ev.gen).
		Str("finish_reason", ev.reason).Dur("sim_time", ev.at).Msg("answered")
}

type embeddingData struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float32 `json:"embedding"`
}

// embed answers an embeddings request: each input is a prefill-only
// request in the engine (it queues, batches and hits the prefix cache
// like any other), and its vector is drawn from the seed and its tokens.
func (s *Server) embed(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := decodeEmbed(body)
	if err != nil {
		writeError(w, err)
		return
	}
	model, err := s.served(req.model)
	if err != nil {
		writeError(w, err)
		return
	}
	streams := make([]*stream, len(req.inputs))
	prompt := 0
	for i, in := range req.inputs {
		streams[i] = newStream()
		sq, err := s.submit(in, 0, FinishStop, streams[i])
		if err != nil {
			writeError(w, err)
			return
		}
		defer s.cancel(sq)
		prompt += len(in)
	}
	data := make([]embeddingData, len(req.inputs))
	for i, st := range streams {
		if _, ok := st.wait(ctx); !ok {
			return
		}
		data[i] = embeddingData{Object: "embedding", Index: i,
			Embedding: embedding(mix(s.cfg.Seed, promptHash(req.inputs[i])), EmbeddingDims)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": s.newID("embd"), "object": "list", "created": time.Now().Unix(),
		"model": model, "data": data, "usage": usage{PromptTokens: prompt, TotalTokens: prompt}})
}

// models answers GET /v1/models.
func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type card struct {
		ID          string `json:"id"`
		Object      string `json:"object"`
		Created     int64  `json:"created"`
		OwnedBy     string `json:"owned_by"`
		Root        string `json:"root"`
		Parent      any    `json:"parent"`
		MaxModelLen int    `json:"max_model_len"`
		Permission  []any  `json:"permission"`
	}
	data := make([]card, len(s.cfg.Models))
	for i, m := range s.cfg.Models {
		data[i] = card{ID: m, Object: "model", Created: s.t0.Unix(), OwnedBy: "fedmesh-simserver", Root: s.cfg.Models[0],
			MaxModelLen: s.cfg.Profile.MaxModelLen, Permission: []any{}}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// writeError answers with the OpenAI error body.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, msg: err.Error()}
	}
	writeJSON(w, ae.status, map[string]any{"error": map[string]any{
		"message": ae.msg, "type": errType(ae.status), "param": nil, "code": ae.status}})
}
