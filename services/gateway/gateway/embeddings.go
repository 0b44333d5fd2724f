package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"

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

type embedding struct {
	Object    string          `json:"object"`
	Embedding json.RawMessage `json:"embedding"`
	Index     int             `json:"index"`
}

func (s *Service) embeddings(w http.ResponseWriter, r *http.Request, c caller) {
	var er embeddingsRequest
	x := s.receiveJSON(w, r, c, wire.CapEmbed, &er)
	if x == nil {
		return
	}
	defer x.cancel()
	x.relayConverted(w, "invalid embeddings JSON", func(resp *client.Response, in io.Reader, out io.Writer) error {
		return streamEmbeddings(in, out, er.EncodingFormat == "base64", modelName(er.Model, resp.Header.Get(wire.HdrModel)), resp.Tokens)
	})
}

// convertEmbeddings is streamEmbeddings on a whole answer.
func convertEmbeddings(b []byte, wantBase64 bool, model string, tokens int) ([]byte, error) {
	var out bytes.Buffer
	if err := streamEmbeddings(bytes.NewReader(b), &out, wantBase64, model, tokens); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// streamEmbeddings reads a node's OpenAI embeddings JSON from r (untrusted:
// it comes off the wire), fills missing fields and converts each vector to
// the encoding the caller asked for (the node may answer floats to a
// base64 request, which the official SDKs send by default, or the other
// way round), and writes the result to w a vector at a time: a large
// answer (thousands of inputs) is never held whole, only one element of
// data and the small members. The output is what json.Marshal of the whole
// decoded answer was: object, data, model, usage; members matched as
// encoding/json matches them (a repeated one's last value wins), except
// that data may come only once. Members other than those are dropped. An
// error may come after part of the output is written.
func streamEmbeddings(r io.Reader, w io.Writer, wantBase64 bool, model string, tokens int) error {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil { // null: no members, so no data
		return fmt.Errorf("no data array")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("json: cannot unmarshal %v into an embeddings response object", tok)
	}
	var (
		object    string
		nodeModel string
		use       json.RawMessage
		sawData   bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		switch {
		case strings.EqualFold(key, "data"):
			if sawData {
				return fmt.Errorf("data twice")
			}
			sawData = true
			if err := streamData(dec, w, wantBase64); err != nil {
				return err
			}
		case strings.EqualFold(key, "object"):
			err = dec.Decode(&object) // only checked: the answer's object is "list"
		case strings.EqualFold(key, "model"):
			err = dec.Decode(&nodeModel)
		case strings.EqualFold(key, "usage"):
			err = dec.Decode(&use)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("invalid character after top-level value")
		}
		return err
	}
	if !sawData {
		return fmt.Errorf("no data array")
	}
	if nodeModel == "" {
		nodeModel = model
	}
	if len(use) == 0 || string(use) == "null" {
		use, _ = json.Marshal(usage{PromptTokens: tokens, TotalTokens: tokens})
	}
	m, _ := json.Marshal(nodeModel)
	u, err := json.Marshal(use) // compacted, as json.Marshal of the whole answer did
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, `,"model":%s,"usage":%s}`, m, u)
	return err
}

// streamData reads the data array (its elements one at a time) and writes
// the answer's head and the converted array.
func streamData(dec *json.Decoder, w io.Writer, wantBase64 bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return fmt.Errorf("no data array")
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("json: cannot unmarshal %v into data", tok)
	}
	if _, err := io.WriteString(w, `{"object":"list","data":[`); err != nil {
		return err
	}
	for i := 0; dec.More(); i++ {
		var e embedding
		if err := dec.Decode(&e); err != nil {
			return err
		}
		b, err := convertEmbedding(&e, i, wantBase64)
		if err != nil {
			return err
		}
		if i > 0 {
			b = append([]byte{','}, b...)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return err
	}
	_, err = io.WriteString(w, "]")
	return err
}

// convertEmbedding fills element i of data and converts its vector.
func convertEmbedding(e *embedding, i int, wantBase64 bool) ([]byte, error) {
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
	return json.Marshal(e)
}
