package wire

// Payload conventions per capability: what a request body holds and what a
// node answers. The gateway and the node agents' backends agree on these, so
// an OpenAI-compatible client and a raw `nats req` both work.
//
//	capability   request body                              answer (non-stream / stream chunks)
//	generate     plain text (one user message), or an      UTF-8 text / text deltas
//	code         OpenAI chat-completions or completions
//	             JSON body (passed through)
//	embed        OpenAI embeddings JSON body, or plain     OpenAI embeddings response JSON
//	             text (one input)
//	transcribe   raw audio bytes; parameters (model,       OpenAI transcription JSON {"text": …}
//	             language, prompt, filename) as JSON in
//	             the Fed-Params header
//	synthesize   OpenAI speech JSON body, or plain text    audio bytes (Fed-Content-Type says which)
//	imagegen     OpenAI images JSON body, or plain text    OpenAI images response JSON
//	             (the prompt)
//	custom.*     opaque                                    opaque
const (
	// HdrParams carries JSON parameters for requests whose body is binary.
	HdrParams = "Fed-Params"
	// HdrContentType is the media type of a binary answer (e.g. audio/mpeg).
	HdrContentType = "Fed-Content-Type"
)

// TranscribeParams are the Fed-Params of a transcribe request (the body is
// the raw audio): what the gateway sends and a node's backend reads.
type TranscribeParams struct {
	Model          string `json:"model,omitempty"`
	Language       string `json:"language,omitempty"`
	Prompt         string `json:"prompt,omitempty"`
	Filename       string `json:"filename,omitempty"`
	ResponseFormat string `json:"response_format,omitempty"`
	Temperature    string `json:"temperature,omitempty"`
}
