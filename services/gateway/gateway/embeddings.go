package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/wire"
)

type embeddingsRequest struct {
	modelRequest
	EncodingFormat string `json:"encoding_format"`
}

func (er *embeddingsRequest) validate() error {
	if er.EncodingFormat != "" && er.EncodingFormat != "float" && er.EncodingFormat != "base64" {
		return invalid(wire.CodeBadRequest, "encoding_format %q: want float or base64", clip(er.EncodingFormat, wire.MaxIDLen))
	}
	return nil
}

type embeddingsResponse struct {
	Object string          `json:"object"`
	Data   []embedding     `json:"data"`
	Model  string          `json:"model"`
	Usage  json.RawMessage `json:"usage,omitempty"`
}

type embedding struct {
	Object    string          `json:"object"`
	Embedding json.RawMessage `json:"embedding"`
	Index     int             `json:"index"`
}

func (s *Service) embeddings(w http.ResponseWriter, r *http.Request, c caller) {
	var er embeddingsRequest
	s.passThrough(w, r, c, wire.CapEmbed, &er, func(x *exchange, resp *client.Response) {
		out, err := convertEmbeddings(resp.Body, er.EncodingFormat == "base64", modelName(er.Model, resp.Header.Get(wire.HdrModel)), resp.Tokens)
		if err != nil {
			x.badOutput(w, resp, "node answered invalid embeddings JSON: "+err.Error())
			return
		}
		x.answerJSON(w, resp, out)
	})
}

// convertEmbeddings reads a node's OpenAI embeddings JSON (untrusted: it
// comes off the wire), fills missing fields and converts each vector to the
// encoding the caller asked for (the node may answer floats to a base64
// request, which the official SDKs send by default, or the other way round).
func convertEmbeddings(b []byte, wantBase64 bool, model string, tokens int) ([]byte, error) {
	var er embeddingsResponse
	if err := json.Unmarshal(b, &er); err != nil {
		return nil, err
	}
	if er.Data == nil {
		return nil, fmt.Errorf("no data array")
	}
	er.Object = "list"
	if er.Model == "" {
		er.Model = model
	}
	if len(er.Usage) == 0 || string(er.Usage) == "null" {
		er.Usage, _ = json.Marshal(usage{PromptTokens: tokens, TotalTokens: tokens})
	}
	for i := range er.Data {
		e := &er.Data[i]
		e.Object = "embedding"
		vec := bytes.TrimSpace(e.Embedding)
		isString := len(vec) > 0 && vec[0] == '"'
		switch {
		case wantBase64 && !isString:
			var fs []float64
			if err := json.Unmarshal(vec, &fs); err != nil {
				return nil, fmt.Errorf("data[%d].embedding: %w", i, err)
			}
			buf := make([]byte, 4*len(fs))
			for j, f := range fs {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(float32(f)))
			}
			e.Embedding, _ = json.Marshal(base64.StdEncoding.EncodeToString(buf))
		case !wantBase64 && isString:
			var s string
			if err := json.Unmarshal(vec, &s); err != nil {
				return nil, fmt.Errorf("data[%d].embedding: %w", i, err)
			}
			raw, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(raw)%4 != 0 {
				return nil, fmt.Errorf("data[%d].embedding is not base64 float32s", i)
			}
			fs := make([]float64, len(raw)/4)
			for j := range fs {
				fs[j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])))
			}
			var err2 error
			if e.Embedding, err2 = json.Marshal(fs); err2 != nil { // NaN/Inf cannot be JSON
				return nil, fmt.Errorf("data[%d].embedding: %w", i, err2)
			}
		case len(vec) == 0:
			return nil, fmt.Errorf("data[%d] has no embedding", i)
		}
	}
	return json.Marshal(er)
}
