package gateway

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// transcriptions handles the multipart upload of POST /v1/audio/transcriptions:
// the file is the body, the other fields travel in Fed-Params.
func (s *Service) transcriptions(w http.ResponseWriter, r *http.Request, c caller) {
	if err := r.ParseMultipartForm(8 << 20); err != nil {
		s.fail(w, c, c.request(), "", bodyError("multipart/form-data request body", err))
		return
	}
	defer func() { _ = r.MultipartForm.RemoveAll() }()
	f, fh, err := r.FormFile("file")
	if err != nil {
		s.fail(w, c, c.request(), "", invalid(wire.CodeBadRequest, "form field file: %v", err))
		return
	}
	defer func() { _ = f.Close() }() // in memory up to 8 MiB, else a temporary file
	p := wire.TranscribeParams{Model: r.FormValue("model"), Language: r.FormValue("language"), Prompt: r.FormValue("prompt"),
		Filename: fh.Filename, ResponseFormat: r.FormValue("response_format"), Temperature: r.FormValue("temperature")}
	x := s.begin(w, r, c, p.Model, wire.CapTranscribe)
	if x == nil {
		return
	}
	defer x.cancel()
	params, _ := json.Marshal(p)
	// streamed to the mesh (out of band when large), never read whole
	x.req.BodyReader, x.req.BodySize = f, fh.Size
	x.req.Header.Set(wire.HdrParams, string(params))
	resp := x.infer(w)
	if resp == nil {
		return
	}
	switch p.ResponseFormat {
	case "text", "srt", "vtt":
		// The node answers {"text": …}; these formats want the bare text.
		var t struct {
			Text string `json:"text"`
		}
		text := string(resp.Body)
		if json.Unmarshal(resp.Body, &t) == nil {
			text = t.Text
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, text)
		x.ok(http.StatusOK, resp.Node, resp.Tokens)
	default:
		x.relayJSON(w, resp, "a transcription")
	}
}

type speechRequest struct {
	modelRequest
	ResponseFormat string `json:"response_format"`
}

// speechTypes maps OpenAI's response_format to a media type, for nodes that
// do not say (Fed-Content-Type).
var speechTypes = map[string]string{"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
	"flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}

func (s *Service) speech(w http.ResponseWriter, r *http.Request, c caller) {
	var sr speechRequest
	s.passThrough(w, r, c, wire.CapSynthesize, &sr, func(x *exchange, resp *client.Response) {
		ct := resp.Header.Get(wire.HdrContentType)
		if ct == "" {
			ct = speechTypes[sr.ResponseFormat]
		}
		if ct == "" {
			ct = "audio/mpeg"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(resp.Body)
		x.ok(http.StatusOK, resp.Node, resp.Tokens)
	})
}
