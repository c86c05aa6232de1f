package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gocloud.dev/gcerrors"
)

// TestConformance runs the same document-storage behaviour against every
// backend, each opened from its URL. Backends run one after another because
// their drivers read credentials and emulator hosts from the environment;
// each test works in fresh tenant IDs, so nothing leaks between tests.
func TestConformance(t *testing.T) {
	backends := []struct {
		name  string
		start func(*testing.T) *backend
	}{
		{"File", fileBackend},
		{"Mem", memBackend},
		{"S3", s3Backend},
		{"GCS", gcsBackend},
		{"Azure", azureBackend},
	}
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			be := bk.start(t)
			for _, tc := range conformanceTests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, be) })
			}
		})
	}
}

var conformanceTests = []struct {
	name string
	fn   func(*testing.T, *backend)
}{
	{"Roundtrip", testRoundtrip},
	{"RefusesOverwrite", testRefusesOverwrite},
	{"SizeLimitWhileReading", testSizeLimit},
	{"ReaderFailsHalfway", testReaderFails},
	{"InspectRejects", testInspectRejects},
	{"RangeReads", testRangeReads},
	{"ListPrefix", testListPrefix},
	{"DeletePrefix", testDeletePrefix},
	{"Delete", testDelete},
	{"NotFound", testNotFound},
	{"SignedURL", testSignedURL},
}

func testRoundtrip(t *testing.T, be *backend) {
	png := append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(2000, 1)...)
	cases := []struct {
		name     string
		body     []byte
		declared string
		wantType string
	}{
		{"BinaryTakesDeclaredType", randomBytes(1<<20+123, 2), "application/pdf", "application/pdf"},
		{"SniffedTypeBeatsDeclared", png, "application/pdf", "image/png"},
		{"ShortText", []byte("hello, world\n"), "", "text/plain; charset=utf-8"},
		{"MalformedDeclaredType", randomBytes(4096, 3), "not a type;;", "application/octet-stream"},
		{"Empty", nil, "", "application/octet-stream"},
		{"ExactlySniffLength", randomBytes(sniffLen, 4), "", "application/octet-stream"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			key := newKey()
			res, err := Put(ctx, be.bucket, key, bytes.NewReader(tc.body), &PutOptions{MaxBytes: 2 << 20, ContentType: tc.declared})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			sha, sum := sha256.Sum256(tc.body), md5.Sum(tc.body)
			want := PutResult{Size: int64(len(tc.body)), SHA256: hex.EncodeToString(sha[:]), MD5: hex.EncodeToString(sum[:]), ContentType: tc.wantType}
			if *res != want {
				t.Errorf("Put result = %+v, want %+v", *res, want)
			}
			got := readAll(t, be, key, 0, -1)
			if !bytes.Equal(got, tc.body) {
				t.Fatalf("read back %d bytes (sha256 %x), want %d (sha256 %s)", len(got), sha256.Sum256(got), len(tc.body), want.SHA256)
			}
			attrs, err := Stat(ctx, be.bucket, key)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if attrs.Size != want.Size || attrs.ContentType != want.ContentType {
				t.Errorf("Stat = size %d type %q, want %d %q", attrs.Size, attrs.ContentType, want.Size, want.ContentType)
			}
		})
	}
}

func testRefusesOverwrite(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	first := randomBytes(3000, 5)
	if _, err := Put(ctx, be.bucket, key, bytes.NewReader(first), nil); err != nil {
		t.Fatalf("first Put: %v", err)
	}
	_, err := Put(ctx, be.bucket, key, bytes.NewReader(randomBytes(5000, 6)), nil)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Put error = %v, want ErrExists", err)
	}
	if got := readAll(t, be, key, 0, -1); !bytes.Equal(got, first) {
		t.Fatalf("object changed by the refused Put: %d bytes, want %d", len(got), len(first))
	}
}

func testSizeLimit(t *testing.T, be *backend) {
	cases := []struct {
		name  string
		limit int64
	}{
		{"WithinHead", 100},
		{"AfterSomeBuffers", 300_000},
		// Past the first S3 part (8 MiB) and Azure block (8 MiB): data has
		// reached the server before the limit trips.
		{"AfterUploadStarted", 9 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			key := newKey()
			src := &countingReader{r: endless(7)} // never ends on its own
			inspected := false
			_, err := Put(ctx, be.bucket, key, src, &PutOptions{
				MaxBytes: tc.limit,
				Inspect:  func([]byte, string) error { inspected = true; return nil },
			})
			var tooLarge *TooLargeError
			if !errors.Is(err, ErrTooLarge) || !errors.As(err, &tooLarge) || tooLarge.Limit != tc.limit {
				t.Fatalf("Put error = %v, want *TooLargeError{Limit: %d}", err, tc.limit)
			}
			if src.n > tc.limit+1 {
				t.Errorf("Put read %d bytes of the body, want at most limit+1 = %d", src.n, tc.limit+1)
			}
			if inspected != (tc.limit >= sniffLen) {
				t.Errorf("Inspect called = %v for limit %d", inspected, tc.limit)
			}
			assertAbsent(t, be, key)

			// Exactly at the limit is fine.
			key = newKey()
			res, err := Put(ctx, be.bucket, key, io.LimitReader(endless(7), tc.limit), &PutOptions{MaxBytes: tc.limit})
			if err != nil || res.Size != tc.limit {
				t.Fatalf("Put of exactly MaxBytes = %v, %v; want size %d", res, err, tc.limit)
			}
		})
	}
}

func testReaderFails(t *testing.T, be *backend) {
	boom := errors.New("client went away")
	cases := []struct {
		name   string
		failAt int64
	}{
		{"InHead", 10},
		{"AfterHead", 100_000},
		{"AfterUploadStarted", 9 << 20}, // past the first S3 part / Azure block
	}
	for _, tc := range cases {
		failAt := tc.failAt
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			key := newKey()
			src := io.MultiReader(io.LimitReader(endless(8), failAt), errReader{boom})
			_, err := Put(ctx, be.bucket, key, src, &PutOptions{MaxBytes: 64 << 20})
			if !errors.Is(err, boom) {
				t.Fatalf("Put error = %v, want the reader's error", err)
			}
			assertAbsent(t, be, key)
		})
	}
}

func testInspectRejects(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	body := append([]byte("%PDF-1.7\n"), randomBytes(10_000, 9)...)
	reject := errors.New("unsupported media type")
	var gotHead []byte
	var gotType string
	_, err := Put(ctx, be.bucket, key, bytes.NewReader(body), &PutOptions{
		ContentType: "image/png",
		Inspect: func(head []byte, contentType string) error {
			gotHead, gotType = bytes.Clone(head), contentType
			return reject
		},
	})
	if err != reject {
		t.Fatalf("Put error = %v, want Inspect's error itself", err)
	}
	if !bytes.Equal(gotHead, body[:sniffLen]) {
		t.Errorf("Inspect head = %d bytes, want the first %d of the body", len(gotHead), sniffLen)
	}
	if gotType != "application/pdf" {
		t.Errorf("Inspect content type = %q, want sniffed application/pdf", gotType)
	}
	assertAbsent(t, be, key)
}

func testRangeReads(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	const size = 100_000
	body := randomBytes(size, 10)
	if _, err := Put(ctx, be.bucket, key, bytes.NewReader(body), nil); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		offset, length int64
		want           []byte
	}{
		{0, -1, body},
		{0, 1, body[:1]},
		{0, 10, body[:10]},
		{1234, 5678, body[1234 : 1234+5678]},
		{size - 10, -1, body[size-10:]},
		{size - 10, 100, body[size-10:]}, // past the end: cut at the end
		{size - 1, 1, body[size-1:]},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d+%d", tc.offset, tc.length), func(t *testing.T) {
			r, err := Open(ctx, be.bucket, key, tc.offset, tc.length)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %d bytes, want %d (offset %d)", len(got), len(tc.want), tc.offset)
			}
			if r.Size() != size {
				t.Errorf("Reader.Size = %d, want the object size %d", r.Size(), size)
			}
		})
	}
}

func testListPrefix(t *testing.T, be *backend) {
	ctx := testContext(t)
	tenantA, tenantB := newID(), newID()
	doc1, doc2 := newID(), newID()
	want := map[string]int64{
		DocumentKey(tenantA, doc1, 1): 10,
		DocumentKey(tenantA, doc1, 2): 20,
		DocumentKey(tenantA, doc2, 1): 30,
	}
	put := func(key string, size int64) {
		t.Helper()
		if _, err := Put(ctx, be.bucket, key, io.LimitReader(endless(11), size), nil); err != nil {
			t.Fatal(err)
		}
	}
	for k, size := range want {
		put(k, size)
	}
	put(DocumentKey(tenantB, newID(), 1), 40)

	got := map[string]int64{}
	var order []string
	start := time.Now().Add(-time.Hour)
	err := ListPrefix(ctx, be.bucket, TenantPrefix(tenantA), func(key string, size int64, modTime time.Time) error {
		got[key] = size
		order = append(order, key)
		if modTime.Before(start) || modTime.After(time.Now().Add(time.Hour)) {
			t.Errorf("%s: modTime %v is not about now", key, modTime)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ListPrefix: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ListPrefix(tenant A) = %v, want %v", got, want)
	}
	if !sort.StringsAreSorted(order) {
		t.Errorf("ListPrefix order %v is not key order", order)
	}

	n := 0
	if err := ListPrefix(ctx, be.bucket, DocumentPrefix(tenantA, doc1), func(string, int64, time.Time) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("ListPrefix(doc1) = %d keys, %v; want 2", n, err)
	}

	stop := errors.New("stop")
	calls := 0
	err = ListPrefix(ctx, be.bucket, TenantPrefix(tenantA), func(string, int64, time.Time) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("ListPrefix with failing fn = %v after %d calls, want fn's error after 1", err, calls)
	}

	for _, prefix := range []string{"", "tenants", "tenants/" + tenantA.String()} {
		if err := ListPrefix(ctx, be.bucket, prefix, func(string, int64, time.Time) error { return nil }); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ListPrefix(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}
}

func testDeletePrefix(t *testing.T, be *backend) {
	ctx := testContext(t)
	tenantA, tenantB := newID(), newID()
	const n = 25 // several rounds of the delete workers
	for i := range n {
		key := DocumentKey(tenantA, newID(), i%3+1)
		if _, err := Put(ctx, be.bucket, key, strings.NewReader(key), nil); err != nil {
			t.Fatal(err)
		}
	}
	keep := DocumentKey(tenantB, newID(), 1)
	if _, err := Put(ctx, be.bucket, keep, strings.NewReader("keep"), nil); err != nil {
		t.Fatal(err)
	}

	deleted, err := DeletePrefix(ctx, be.bucket, TenantPrefix(tenantA))
	if err != nil || deleted != n {
		t.Fatalf("DeletePrefix = %d, %v; want %d, nil", deleted, err, n)
	}
	if keys := listKeys(t, be, TenantPrefix(tenantA)); len(keys) != 0 {
		t.Errorf("after purge tenant A still has %v", keys)
	}
	if keys := listKeys(t, be, TenantPrefix(tenantB)); len(keys) != 1 {
		t.Errorf("purging tenant A touched tenant B: %v", keys)
	}
	if deleted, err := DeletePrefix(ctx, be.bucket, TenantPrefix(tenantA)); err != nil || deleted != 0 {
		t.Errorf("second DeletePrefix = %d, %v; want 0, nil", deleted, err)
	}
	if _, err := DeletePrefix(ctx, be.bucket, ""); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("DeletePrefix(\"\") = %v, want ErrInvalidKey", err)
	}
}

func testDelete(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	if _, err := Put(ctx, be.bucket, key, strings.NewReader("bye"), nil); err != nil {
		t.Fatal(err)
	}
	if err := Delete(ctx, be.bucket, key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	assertAbsent(t, be, key)
	if err := Delete(ctx, be.bucket, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	// The key is free again (restoring is a new version, but a retried
	// upload after a purge must not be blocked by a tombstone).
	if _, err := Put(ctx, be.bucket, key, strings.NewReader("again"), nil); err != nil {
		t.Errorf("Put after Delete: %v", err)
	}
}

func testNotFound(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	_, openErr := Open(ctx, be.bucket, key, 0, -1)
	_, statErr := Stat(ctx, be.bucket, key)
	delErr := Delete(ctx, be.bucket, key)
	for name, err := range map[string]error{"Open": openErr, "Stat": statErr, "Delete": delErr} {
		if !errors.Is(err, ErrNotFound) || gcerrors.Code(err) != gcerrors.NotFound {
			t.Errorf("%s of a missing key = %v (code %v), want ErrNotFound wrapping the driver's NotFound", name, err, gcerrors.Code(err))
		}
	}
}

func testSignedURL(t *testing.T, be *backend) {
	ctx := testContext(t)
	key := newKey()
	body := randomBytes(5000, 12)
	if _, err := Put(ctx, be.bucket, key, bytes.NewReader(body), nil); err != nil {
		t.Fatal(err)
	}
	signer, err := NewSigner(bytes.Repeat([]byte("s"), MinSecretLen), "https://pm.example.test")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := SignedURL(ctx, be.bucket, key, 10*time.Minute, signer)
	if err != nil {
		t.Fatalf("SignedURL: %v", err)
	}

	if !be.nativeSignedURLs {
		if !strings.HasPrefix(signed, "https://pm.example.test"+BlobsPath+"?") {
			t.Fatalf("fallback URL = %s, want one served by us at %s", signed, BlobsPath)
		}
		u, err := url.Parse(signed)
		if err != nil {
			t.Fatal(err)
		}
		got, err := signer.Verify(u.Query(), time.Now())
		if err != nil || got != key {
			t.Fatalf("Verify(own URL) = %q, %v; want %q", got, err, key)
		}
		// Serve it the way the API will: verify, then Open the key.
		if b := readAll(t, be, got, 0, -1); !bytes.Equal(b, body) {
			t.Errorf("object behind the verified key differs")
		}
		if _, err := signer.Verify(u.Query(), time.Now().Add(11*time.Minute)); !errors.Is(err, ErrExpired) {
			t.Errorf("Verify after expiry = %v, want ErrExpired", err)
		}
		q := u.Query()
		q.Set("key", DocumentKey(newID(), newID(), 1))
		if _, err := signer.Verify(q, time.Now()); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("Verify with another key = %v, want ErrInvalidSignature", err)
		}
		if _, err := SignedURL(ctx, be.bucket, key, time.Minute, nil); !errors.Is(err, ErrSignedURLUnsupported) {
			t.Errorf("SignedURL without fallback = %v, want ErrSignedURLUnsupported", err)
		}
		return
	}

	if strings.Contains(signed, BlobsPath) {
		t.Fatalf("native backend fell back to our signer: %s", signed)
	}
	fetch := func(raw string) (int, []byte) {
		t.Helper()
		if be.reachSignedURL != nil {
			raw = be.reachSignedURL(raw)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET signed URL: %v", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	status, got := fetch(signed)
	if status != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("GET signed URL = %d with %d bytes, want 200 with the %d-byte object", status, len(got), len(body))
	}
	if be.checksSignatures {
		tampered := strings.Replace(signed, "sig=", "sig=AAAA", 1)
		if tampered == signed {
			t.Fatalf("no sig parameter in %s", signed)
		}
		if status, _ := fetch(tampered); status != http.StatusForbidden {
			t.Errorf("GET tampered signed URL = %d, want 403", status)
		}
	}
}

// Helpers.

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

func newKey() string { return DocumentKey(newID(), newID(), 1) }

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

// endless returns a reader of never-ending pseudo-random bytes.
func endless(seed uint64) io.Reader { return rand.NewChaCha8([32]byte{byte(seed)}) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func readAll(t *testing.T, be *backend, key string, offset, length int64) []byte {
	t.Helper()
	r, err := Open(testContext(t), be.bucket, key, offset, length)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func listKeys(t *testing.T, be *backend, prefix string) []string {
	t.Helper()
	var keys []string
	err := ListPrefix(testContext(t), be.bucket, prefix, func(key string, _ int64, _ time.Time) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatalf("ListPrefix(%s): %v", prefix, err)
	}
	return keys
}

// assertAbsent checks that key does not exist and that nothing else was
// left beside it (temporary files, partial objects).
func assertAbsent(t *testing.T, be *backend, key string) {
	t.Helper()
	if _, err := Stat(testContext(t), be.bucket, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(%s) = %v, want ErrNotFound: an aborted upload was committed", key, err)
	}
	tenant, doc, _, err := ParseDocumentKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if keys := listKeys(t, be, DocumentPrefix(tenant, doc)); len(keys) != 0 {
		t.Errorf("leftovers under the document prefix: %v", keys)
	}
}
