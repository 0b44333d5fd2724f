package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// transcriptions handles the multipart upload of POST /v1/audio/transcriptions:
// the file is the body, the other fields travel in Fed-Params. The form is
// read part by part as it arrives: the file streams into fed_blobs when it
// is large (it may come before the fields the request is routed by, as the
// openai npm client sends it), and is never held whole nor spooled to disk.
func (s *Service) transcriptions(w http.ResponseWriter, r *http.Request, c caller) {
	f, err := s.readForm(r, c)
	if err != nil {
		s.fail(w, c, c.request(), "", err)
		return
	}
	defer f.file.discard()
	p := wire.TranscribeParams{Model: f.value("model"), Language: f.value("language"), Prompt: f.value("prompt"),
		Filename: f.filename, ResponseFormat: f.value("response_format"), Temperature: f.value("temperature")}
	x := s.begin(w, r, c, p.Model, wire.CapTranscribe)
	if x == nil {
		return
	}
	defer x.cancel()
	params, _ := json.Marshal(p)
	f.file.into(&x.req)
	x.req.Header.Set(wire.HdrParams, string(params))
	switch p.ResponseFormat {
	case "text", "srt", "vtt":
	default: // the node's JSON as it is: a large one streams
		x.relayJSONAnswer(w, "a transcription")
		return
	}
	// The bare text is cut out of the node's {"text": …}, read whole: a
	// transcript beyond one message (a million characters) is not a case
	// worth a streaming JSON string decoder (DESIGN §3.7 step 7).
	resp := x.infer(w)
	if resp == nil {
		return
	}
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
}

type speechRequest struct {
	modelRequest
	ResponseFormat string `json:"response_format"`
}

// speechTypes maps OpenAI's response_format to a media type, for nodes that
// do not say (Fed-Content-Type).
var speechTypes = map[string]string{"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
	"flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}

// speech answers with the node's audio as it comes: a large answer is
// copied from fed_blobs to the response a segment at a time, never held.
func (s *Service) speech(w http.ResponseWriter, r *http.Request, c caller) {
	var sr speechRequest
	x := s.receiveJSON(w, r, c, wire.CapSynthesize, &sr)
	if x == nil {
		return
	}
	defer x.cancel()
	x.relayAnswer(w, func(resp *client.Response) string {
		if ct := resp.Header.Get(wire.HdrContentType); ct != "" {
			return ct
		}
		if ct := speechTypes[sr.ResponseFormat]; ct != "" {
			return ct
		}
		return "audio/mpeg"
	})
}

// maxFormValues bounds the form's fields other than the file, together:
// they travel in one header (Fed-Params).
const maxFormValues = 256 << 10

// form is a transcription's multipart form as read: its file and the other
// fields' values.
type form struct {
	file     requestBody
	filename string
	values   url.Values
	query    url.Values
}

// value is the first value of field name as r.FormValue gives it: the URL
// query's first, then the form's.
func (f *form) value(name string) string {
	if vs, ok := f.query[name]; ok && len(vs) > 0 {
		return vs[0]
	}
	return f.values.Get(name)
}

// readForm reads r's multipart form: the first part named file with a
// filename is the file (read as receive reads a body); other parts with a
// filename are read and dropped; the rest are values, at most
// maxFormValues bytes in all.
func (s *Service) readForm(r *http.Request, c caller) (*form, error) {
	const what = "multipart/form-data request body"
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, bodyError(what, err)
	}
	f := &form{values: url.Values{}, query: r.URL.Query()}
	haveFile, valueBytes := false, 0
	fail := func(err error) (*form, error) {
		f.file.discard()
		return nil, err
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(bodyError(what, err))
		}
		name, filename := part.FormName(), part.FileName()
		switch {
		case name == "file" && filename != "" && !haveFile:
			haveFile, f.filename = true, filename
			if f.file, err = s.receive(r.Context(), c, what, part, nil); err != nil {
				return fail(err)
			}
		case filename != "":
			if _, err := io.Copy(io.Discard, part); err != nil {
				return fail(bodyError(what, err))
			}
		default:
			v, err := io.ReadAll(io.LimitReader(part, int64(maxFormValues-valueBytes+1)))
			if err != nil {
				return fail(bodyError(what, err))
			}
			if valueBytes += len(v); valueBytes > maxFormValues {
				return fail(invalid(wire.CodeBadRequest, "form fields other than file take more than %d bytes", maxFormValues))
			}
			f.values.Add(name, string(v))
		}
	}
	if !haveFile {
		return nil, invalid(wire.CodeBadRequest, "form field file: %v", http.ErrMissingFile)
	}
	return f, nil
}
