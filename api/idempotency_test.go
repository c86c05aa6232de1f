package api

import (
	"bytes"
	"context"
	"math/rand/v2"
	"mime/multipart"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/internal/testenv"
)

// multipartOf builds the same form (a title and a file) with the given
// boundary, as two clients (or two attempts) would.
func multipartOf(t *testing.T, boundary string, file []byte) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.SetBoundary(boundary); err != nil {
		t.Fatal(err)
	}
	w.WriteField("title", "report")
	fw, _ := w.CreateFormFile("file", "r.txt")
	fw.Write(file)
	w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

// fingerprintOf hashes body written in random chunks (as a stream is read).
func fingerprintOf(method, uri, ct string, body []byte, rnd *rand.Rand) string {
	f := newRequestFingerprint(method, uri, ct)
	for len(body) > 0 {
		n := min(len(body), 1+rnd.IntN(70))
		f.Write(body[:n])
		body = body[n:]
	}
	return f.Sum()
}

// The fingerprint of a multipart body does not depend on the boundary the
// client picked nor on how the stream was split into reads; it does depend
// on the content, the path and the method.
func TestFingerprint(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	file := bytes.Repeat([]byte("line of a file --not-a-boundary\r\n"), 300)
	ctA, a := multipartOf(t, "boundaryAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", file)
	ctB, b := multipartOf(t, "xyz0123456789", file)
	ctC, c := multipartOf(t, "xyz0123456789", append(bytes.Clone(file), '!'))
	const uri = "/v1/tenants/x/projects/p/documents"
	want := fingerprintOf("POST", uri, ctA, a, rnd)
	for i := range 20 {
		if got := fingerprintOf("POST", uri, ctA, a, rnd); got != want {
			t.Fatalf("split %d: fingerprint changed with the read sizes", i)
		}
		if got := fingerprintOf("POST", uri, ctB, b, rnd); got != want {
			t.Fatalf("split %d: fingerprint changed with the boundary", i)
		}
	}
	for name, got := range map[string]string{
		"OtherContent": fingerprintOf("POST", uri, ctC, c, rnd),
		"OtherPath":    fingerprintOf("POST", uri+"?x=1", ctA, a, rnd),
		"OtherMethod":  fingerprintOf("PUT", uri, ctA, a, rnd),
		"JSON":         fingerprintOf("POST", uri, "application/json", a, rnd),
	} {
		if got == want {
			t.Errorf("%s: same fingerprint", name)
		}
	}
}

// Both stores keep a key for one owner at a time, compare-and-set on the
// owner's token, and expire leases.
func TestIdempotencyStores(t *testing.T) {
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	for name, st := range map[string]IdempotencyStore{"Memory": NewMemoryIdempotencyStore(), "Redis": NewRedisIdempotencyStore(rc)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			key := "pm:idem:test:" + uuid.NewString()
			lease := IdempotencyRecord{Pending: true, Token: "owner", Fingerprint: "f1"}
			if got, err := st.Begin(ctx, key, lease, time.Minute); err != nil || got != nil {
				t.Fatalf("first begin: %v %v", got, err)
			}
			got, err := st.Begin(ctx, key, IdempotencyRecord{Pending: true, Token: "intruder"}, time.Minute)
			if err != nil || got == nil || !got.Pending || got.Fingerprint != "f1" {
				t.Fatalf("second begin: %+v %v", got, err)
			}
			// Only the owner completes or releases.
			st.Complete(ctx, key, "intruder", IdempotencyRecord{Status: 500}, time.Minute)
			st.Release(ctx, key, "intruder")
			if got, _ := st.Begin(ctx, key, lease, time.Minute); got == nil || !got.Pending {
				t.Fatalf("a non-owner changed the lease: %+v", got)
			}
			done := IdempotencyRecord{Fingerprint: "f1", Status: 201, Body: []byte(`{"id":1}`), Header: map[string]string{"Content-Type": "application/json"}}
			if err := st.Complete(ctx, key, "owner", done, time.Minute); err != nil {
				t.Fatal(err)
			}
			got, _ = st.Begin(ctx, key, lease, time.Minute)
			if got == nil || got.Pending || got.Status != 201 || string(got.Body) != `{"id":1}` || got.Header["Content-Type"] != "application/json" {
				t.Fatalf("completed: %+v", got)
			}
			st.Release(ctx, key, "owner") // a completed record is not a lease
			if got, _ := st.Begin(ctx, key, lease, time.Minute); got == nil || got.Status != 201 {
				t.Fatalf("release dropped a completed record: %+v", got)
			}
			// A lease not renewed expires; one renewed does not.
			k2 := key + ":2"
			st.Begin(ctx, k2, lease, 300*time.Millisecond)
			st.Extend(ctx, k2, "owner", 2*time.Second)
			time.Sleep(400 * time.Millisecond)
			if got, _ := st.Begin(ctx, k2, lease, time.Minute); got == nil {
				t.Fatal("a renewed lease expired")
			}
			k3 := key + ":3"
			st.Begin(ctx, k3, lease, 100*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			if got, _ := st.Begin(ctx, k3, lease, time.Minute); got != nil {
				t.Fatalf("an expired lease still holds its key: %+v", got)
			}
		})
	}
}

// The in-process store stays within its bounds, dropping the oldest records.
func TestMemoryIdempotencyStoreBounds(t *testing.T) {
	ctx := context.Background()
	st := NewMemoryIdempotencyStore()
	st.MaxEntries, st.MaxBytes = 100, 64<<10
	body := bytes.Repeat([]byte("x"), 1000)
	for i := range 1000 {
		k := uuid.NewString()
		st.Begin(ctx, k, IdempotencyRecord{Pending: true, Token: "t"}, time.Hour)
		st.Complete(ctx, k, "t", IdempotencyRecord{Status: 201, Body: body}, time.Hour)
		if len(st.m) > st.MaxEntries || st.bytes > st.MaxBytes || st.order.Len() != len(st.m) {
			t.Fatalf("after %d: %d records, %d bytes (bounds %d, %d)", i, len(st.m), st.bytes, st.MaxEntries, st.MaxBytes)
		}
	}
	if len(st.m) < 40 {
		t.Fatalf("only %d records kept", len(st.m))
	}
}
