package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/services/gateway/gateway"
	"github.com/fedmesh/fedmesh/services/nodeagent/backend"
	"github.com/fedmesh/fedmesh/services/nodeagent/nodeagent"
	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/client"
	"github.com/fedmesh/fedmesh/shared/record"
	"github.com/fedmesh/fedmesh/shared/wire"
)

// Large request bodies (issue 15, DESIGN §3.7): 8 and 64 MiB end to end
// through the mesh against raw Object Store put+get of the same size on
// the same server, interleaved in one run. The node's backend only counts
// the bytes, so the figure is the mesh's, not a model's.

const (
	modelBlob  = "bench-blob"
	blobNode   = "bench-blob-node"
	blobRounds = 5 // per size and side
	benchKey   = "bench-key"
)

// blobNodeConfig serves modelBlob with lengthBackend.
func blobNodeConfig() nodeagent.Config {
	n := nodeagent.DefaultConfig()
	n.NodeID, n.Region, n.MaxConcurrency = blobNode, "local", 4
	n.Models = []record.Model{{ModelID: modelBlob, Capabilities: []string{wire.CapGenerate}}}
	n.Backend = lengthBackend{}
	return n
}

// benchGateway is the gateway of the open rig (the blob table's HTTP side).
func benchGateway() *gateway.Config {
	g := gateway.DefaultConfig()
	g.Addr = "127.0.0.1:0"
	g.Timeout = 2 * time.Minute
	g.Keys = map[string]gateway.Tenant{benchKey: {ID: "bench"}}
	return &g
}

// lengthBackend answers with the body's length.
type lengthBackend struct{}

func (lengthBackend) Name() string { return "length" }

func (lengthBackend) Generate(_ context.Context, call backend.Call, emit func([]byte) error) (backend.Result, error) {
	return backend.Result{Tokens: 1}, emit([]byte(strconv.Itoa(len(call.Body))))
}

func (r *rig) blobTable(ctx context.Context, w io.Writer) error {
	s, err := r.session()
	if err != nil {
		return err
	}
	defer s.close()
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("bench: blobs: %w", err)
	}
	obs, err := js.ObjectStore(ctx, buckets.Blobs)
	if err != nil {
		return fmt.Errorf("bench: blobs: %w", err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+buckets.Blobs)
	if err != nil {
		return fmt.Errorf("bench: blobs: %w", err)
	}
	chunk := uint32(min(int64(blobs.ChunkSize), blobs.InlineLimit(s.nc.MaxPayload())))
	fmt.Fprintf(w, "### Large request bodies: raw Object Store put+get vs end to end through the mesh (%d rounds each, interleaved)\n\n", blobRounds)
	fmt.Fprintf(w, "Raw: nats.go's Object Store on `fed_blobs`, unsealed, the chunks fedmesh uses, read back into a buffer of the known size. SDK: `client.Infer` with the body (sealed upload, routing, the node's download) to a node that answers the body's length; the SDK deletes the blob right after the call returns, as the raw side's delete is after its timing. Gateway: the same body as a chat request's prompt over HTTP (streamed into `fed_blobs` as it is read). All on one server, over loopback TCP.\n\n")
	fmt.Fprintf(w, "| body | raw put+get MB/s | SDK MB/s | ratio (target ≥ 0.7×) | gateway (HTTP) MB/s | ratio |\n|---|---|---|---|---|---|\n")
	url := "http://" + r.mesh.Gateway.Addr() + "/v1/chat/completions"
	for _, size := range []int{8 << 20, 64 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		head, tail := `{"model":"`+modelBlob+`","messages":[{"role":"user","content":"`, `"}]}`
		chat := append(append([]byte(head), body[:size-len(head)-len(tail)]...), tail...)
		var raw, mesh, gw time.Duration
		for range blobRounds {
			d, err := rawPutGet(ctx, obs, body, chunk)
			if err != nil {
				return err
			}
			raw += d
			if d, err = sdkBlob(ctx, s.c, body); err != nil {
				return err
			}
			mesh += d
			if d, err = gatewayBlob(ctx, url, chat); err != nil {
				return err
			}
			gw += d
		}
		if err := stream.Purge(ctx); err != nil { // the raw side's delete markers
			return fmt.Errorf("bench: blobs: purge: %w", err)
		}
		mbs := func(d time.Duration) float64 { return float64(size*blobRounds) / 1e6 / d.Seconds() }
		fmt.Fprintf(w, "| %d MiB | %.0f | %.0f | %.2f× | %.0f | %.2f× |\n", size>>20, mbs(raw), mbs(mesh), mbs(mesh)/mbs(raw), mbs(gw), mbs(gw)/mbs(raw))
	}
	fmt.Fprintln(w)
	return nil
}

func rawPutGet(ctx context.Context, obs jetstream.ObjectStore, body []byte, chunk uint32) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	name := blobs.NewName(blobs.RequestPrefix)
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunk}}, bytes.NewReader(body)); err != nil {
		return 0, fmt.Errorf("bench: raw put: %w", err)
	}
	res, err := obs.Get(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("bench: raw get: %w", err)
	}
	got := make([]byte, len(body)) // as the node reads: into a buffer of the known size
	_, err = io.ReadFull(res, got)
	_ = res.Close()
	if err != nil {
		return 0, fmt.Errorf("bench: raw get: %w", err)
	}
	d := time.Since(start)
	if err := obs.Delete(ctx, name); err != nil {
		return 0, fmt.Errorf("bench: raw delete: %w", err)
	}
	return d, nil
}

func sdkBlob(ctx context.Context, c *client.Client, body []byte) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	resp, err := c.Infer(ctx, client.Request{Capability: wire.CapGenerate, Model: modelBlob, Body: body})
	if err != nil {
		return 0, fmt.Errorf("bench: blob request of %d bytes: %w", len(body), err)
	}
	if string(resp.Body) != strconv.Itoa(len(body)) {
		return 0, fmt.Errorf("bench: blob request of %d bytes: the node got %s bytes", len(body), resp.Body)
	}
	return time.Since(start), nil
}

// gatewayBlob posts a chat body, which reaches the node as it is: the
// node answers its length.
func gatewayBlob(ctx context.Context, url string, body []byte) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+benchKey)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("bench: gateway blob request: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	d := time.Since(start)
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("bench: gateway blob request of %d bytes: HTTP %d", len(body), resp.StatusCode)
	case err != nil || len(out.Choices) != 1:
		return 0, fmt.Errorf("bench: gateway blob request of %d bytes: bad answer: %v", len(body), err)
	case out.Choices[0].Message.Content != strconv.Itoa(len(body)):
		return 0, fmt.Errorf("bench: gateway blob request of %d bytes: the node got %s bytes", len(body), out.Choices[0].Message.Content)
	}
	return d, nil
}
