package blobs_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedmesh/fedmesh/shared/blobs"
	"github.com/fedmesh/fedmesh/shared/buckets"
	"github.com/fedmesh/fedmesh/shared/natsembed"
)

// BenchmarkPutGet64MB puts and reads back 64 MiB through Store (sealed,
// Put then Bytes, then Delete) and through nats.go's Object Store (raw,
// unsealed, the same chunk size), alternately in one loop on one server,
// and reports the Store's throughput as a ratio of raw's: what sealing,
// the Store's own copies and its delete cost, with no routing in between
// (raw's delete is not timed).
func BenchmarkPutGet64MB(b *testing.B) {
	const size = 64 << 20
	s := natsembed.StartForTest(b)
	nc := natsembed.ConnectForTest(b, s)
	ctx := context.Background()
	if _, err := buckets.EnsureConn(ctx, nc, buckets.Options{}); err != nil {
		b.Fatal(err)
	}
	store, err := blobs.OpenStore(ctx, nc)
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, buckets.Blobs)
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	var raw, sealed, rawPut, sealedPut, sealedGet time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		name := blobs.NewName(blobs.RequestPrefix)
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: blobs.ChunkSize - blobs.Headroom}},
			bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
		res, err := obs.Get(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		got := make([]byte, size)
		rawPut += time.Since(start)
		if _, err := io.ReadFull(res, got); err != nil {
			b.Fatal(err)
		}
		_ = res.Close()
		raw += time.Since(start)
		b.StopTimer()
		if err := store.Delete(ctx, name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		start = time.Now()
		ref, err := store.Put(ctx, blobs.NewName(blobs.RequestPrefix), bytes.NewReader(body), size)
		if err != nil {
			b.Fatal(err)
		}
		sealedPut += time.Since(start)
		if got, err = store.Bytes(ctx, ref, size); err != nil || len(got) != size {
			b.Fatal(err)
		}
		sealedGet += time.Since(start)
		if err := store.Delete(ctx, ref.Name); err != nil {
			b.Fatal(err)
		}
		sealed += time.Since(start)
	}
	mbs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / 1e6 / d.Seconds() }
	b.ReportMetric(mbs(raw), "raw-MB/s")
	b.ReportMetric(mbs(sealed), "sealed-MB/s")
	b.ReportMetric(mbs(sealed)/mbs(raw), "sealed/raw")
	// where the time goes, per side: put, get, and the Store's delete
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(ms(rawPut), "raw-put-ms")
	b.ReportMetric(ms(raw-rawPut), "raw-get-ms")
	b.ReportMetric(ms(sealedPut), "put-ms")
	b.ReportMetric(ms(sealedGet-sealedPut), "get-ms")
	b.ReportMetric(ms(sealed-sealedGet), "delete-ms")
}
