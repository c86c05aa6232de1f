package storage

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// BenchmarkPutFile streams generated objects through Put into a file bucket.
// Memory must stay flat: allocated bytes per Put do not grow with the object,
// so allocB/objB (allocated bytes per object byte) falls as the object grows
// and B/op is about the same at 16 MiB and 256 MiB.
//
//	go test ./storage -run '^$' -bench PutFile -benchtime 2x
func BenchmarkPutFile(b *testing.B) {
	for _, size := range []int64{16 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			ctx := context.Background()
			bucket, err := OpenBucket(ctx, "file://"+b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer bucket.Close()
			tenant, doc := newID(), newID()
			b.SetBytes(size)
			b.ReportAllocs()

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			version := 0
			for b.Loop() {
				version++
				key := DocumentKey(tenant, doc, version)
				res, err := Put(ctx, bucket, key, &patternReader{left: size}, &PutOptions{MaxBytes: size})
				if err != nil {
					b.Fatal(err)
				}
				if res.Size != size {
					b.Fatalf("stored %d bytes, want %d", res.Size, size)
				}
				b.StopTimer()
				if err := Delete(ctx, bucket, key); err != nil { // keep the disk footprint to one object
					b.Fatal(err)
				}
				b.StartTimer()
			}
			runtime.ReadMemStats(&after)
			perOp := float64(after.TotalAlloc-before.TotalAlloc) / float64(version)
			b.ReportMetric(perOp/float64(size), "allocB/objB")
			b.ReportMetric(float64(after.HeapSys)/(1<<20), "heapSysMiB")
		})
	}
}

// patternReader generates left bytes without holding them.
type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for i := range p {
		p[i] = byte(i*31 + int(r.left))
	}
	r.left -= int64(len(p))
	return len(p), nil
}
