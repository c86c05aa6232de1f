package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestDocumentKey(t *testing.T) {
	tenant := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057")
	doc := uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8058")
	if got, want := DocumentKey(tenant, doc, 3), "tenants/01890a5d-ac96-774b-bcce-b302099a8057/documents/01890a5d-ac96-774b-bcce-b302099a8058/v3"; got != want {
		t.Errorf("DocumentKey = %q, want %q", got, want)
	}
	if got := TenantPrefix(tenant); !strings.HasPrefix(DocumentKey(tenant, doc, 1), got) || !strings.HasSuffix(got, "/") {
		t.Errorf("TenantPrefix = %q is not a /-terminated prefix of the tenant's keys", got)
	}

	gotTenant, gotDoc, gotVersion, err := ParseDocumentKey(DocumentKey(tenant, doc, 12))
	if err != nil || gotTenant != tenant || gotDoc != doc || gotVersion != 12 {
		t.Errorf("ParseDocumentKey(DocumentKey(...12)) = %v %v %d %v", gotTenant, gotDoc, gotVersion, err)
	}
	canonical := DocumentKey(tenant, doc, 1)
	for _, key := range []string{
		"",
		canonical + ".tmp",
		canonical + ".1a2b.tmp",
		strings.Replace(canonical, "/v1", "/v0", 1),
		strings.Replace(canonical, "/v1", "/v01", 1),
		strings.Replace(canonical, "/v1", "/v+1", 1),
		strings.Replace(canonical, "/v1", "/1", 1),
		strings.ToUpper(canonical),
		strings.Replace(canonical, "tenants/", "tenants/urn:uuid:", 1),
		"tenants/" + uuid.Nil.String() + "/documents/" + doc.String() + "/v1",
		"../" + canonical,
		canonical + "/v2",
	} {
		if _, _, _, err := ParseDocumentKey(key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseDocumentKey(%q) = %v, want ErrInvalidKey", key, err)
		}
	}

	for name, f := range map[string]func(){
		"VersionZero": func() { DocumentKey(tenant, doc, 0) },
		"NilTenant":   func() { DocumentKey(uuid.Nil, doc, 1) },
		"NilDocument": func() { DocumentKey(tenant, uuid.Nil, 1) },
		"NilPrefix":   func() { TenantPrefix(uuid.Nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

func TestSigner(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, MinSecretLen)
	s, err := NewSigner(secret, "https://pm.example.test/base/")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	key := DocumentKey(newID(), newID(), 1)
	raw := s.Sign(key, now.Add(time.Minute))
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "pm.example.test" || u.Path != "/base"+BlobsPath {
		t.Errorf("signed URL %s is not under the base URL at %s", raw, BlobsPath)
	}
	if got, err := s.Verify(u.Query(), now); err != nil || got != key {
		t.Fatalf("Verify = %q, %v; want %q", got, err, key)
	}

	other, _ := NewSigner(bytes.Repeat([]byte{8}, MinSecretLen), "https://pm.example.test")
	tests := []struct {
		name   string
		signer *Signer
		edit   func(url.Values)
		now    time.Time
		want   error
	}{
		{"Expired", s, nil, now.Add(time.Minute), ErrExpired},
		{"OtherSecret", other, nil, now, ErrInvalidSignature},
		{"OtherKey", s, func(q url.Values) { q.Set("key", DocumentKey(newID(), newID(), 1)) }, now, ErrInvalidSignature},
		{"LaterExpiry", s, func(q url.Values) { q.Set("expires", "9999999999") }, now, ErrInvalidSignature},
		{"FlippedSig", s, func(q url.Values) { q.Set("sig", flip(q.Get("sig"))) }, now, ErrInvalidSignature},
		{"ShortSig", s, func(q url.Values) { q.Set("sig", q.Get("sig")[:10]) }, now, ErrInvalidSignature},
		{"NotBase64", s, func(q url.Values) { q.Set("sig", "!!!") }, now, ErrInvalidSignature},
		{"NoSig", s, func(q url.Values) { q.Del("sig") }, now, ErrInvalidSignature},
		{"NoKey", s, func(q url.Values) { q.Del("key") }, now, ErrInvalidSignature},
		{"NoExpiry", s, func(q url.Values) { q.Del("expires") }, now, ErrInvalidSignature},
		{"TwoKeys", s, func(q url.Values) { q.Add("key", "tenants/x/") }, now, ErrInvalidSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := u.Query()
			if tc.edit != nil {
				tc.edit(q)
			}
			if got, err := tc.signer.Verify(q, tc.now); !errors.Is(err, tc.want) || got != "" {
				t.Errorf("Verify = %q, %v; want \"\", %v", got, err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		secret []byte
		base   string
	}{
		{secret[:MinSecretLen-1], "https://pm.example.test"},
		{secret, "pm.example.test"},
		{secret, "/relative"},
		{secret, "ftp://pm.example.test"},
		{secret, "https://pm.example.test/?x=1"},
	} {
		if _, err := NewSigner(tc.secret, tc.base); err == nil {
			t.Errorf("NewSigner(%d-byte secret, %q) accepted", len(tc.secret), tc.base)
		}
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

func TestOpenBucket(t *testing.T) {
	ctx := context.Background()
	for _, raw := range []string{"http://example.com/bucket", "ftp://x", "bucket", "::"} {
		if b, err := OpenBucket(ctx, raw); err == nil {
			b.Close()
			t.Errorf("OpenBucket(%q) accepted", raw)
		}
	}

	// fileblob must write its temporary files inside the bucket directory:
	// a rename from os.TempDir fails across filesystems (tmpfs /tmp, a
	// mounted volume for the bucket). Point TMPDIR nowhere to prove it.
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "does-not-exist"))
	dir := filepath.Join(t.TempDir(), "a", "b")
	b, err := OpenBucket(ctx, "file://"+filepath.ToSlash(dir))
	if err != nil {
		t.Fatalf("OpenBucket(file) of a missing directory: %v", err)
	}
	defer b.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("bucket directory not created: %v", err)
	}
	key := newKey()
	if _, err := Put(ctx, b, key, strings.NewReader("same filesystem"), nil); err != nil {
		t.Fatalf("Put with TMPDIR unusable: %v", err)
	}
}

func TestPutVerifyDeletesMismatch(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBucket(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	key := newKey()
	if err := b.WriteAll(ctx, key, []byte("what the bucket holds"), nil); err != nil {
		t.Fatal(err)
	}
	// As if the driver had stored other bytes than Put streamed.
	if err := verify(ctx, b, key, int64(len("what the bucket holds")), make([]byte, 16)); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("verify with a wrong MD5 = %v, want ErrIntegrity", err)
	}
	if ok, _ := b.Exists(ctx, key); ok {
		t.Error("object that failed verification still exists")
	}
}

func TestDetectContentType(t *testing.T) {
	html := []byte("<!DOCTYPE html><script>alert(1)</script>")
	tests := []struct {
		name     string
		head     []byte
		declared string
		want     string
	}{
		{"SniffWins", html, "application/pdf", "text/html; charset=utf-8"},
		// A client cannot turn plain text into HTML (served inline: XSS).
		{"TextStaysText", []byte("just words"), "text/html", "text/plain; charset=utf-8"},
		{"BinaryTakesDeclared", []byte{0, 1, 2, 3}, "application/vnd.ms-excel", "application/vnd.ms-excel"},
		{"DeclaredNormalised", []byte{0, 1, 2, 3}, "Application/PDF; Charset=\"x\"", "application/pdf; charset=x"},
		{"DeclaredMalformed", []byte{0, 1, 2, 3}, "application/", "application/octet-stream"},
		{"EmptyNoDeclared", nil, "", "application/octet-stream"},
		{"EmptyDeclared", nil, "text/csv", "text/csv"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := detectContentType(tc.head, tc.declared); got != tc.want {
				t.Errorf("detectContentType = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPutReadsNoFurtherThanLimit(t *testing.T) {
	ctx := context.Background()
	b, err := OpenBucket(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// A body that panics if asked for byte limit+2: Put must stop at limit+1.
	const limit = 70_000
	src := &tripwire{r: endless(1), left: limit + 1}
	_, err = Put(ctx, b, newKey(), src, &PutOptions{MaxBytes: limit})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Put = %v, want ErrTooLarge", err)
	}
}

type tripwire struct {
	r    io.Reader
	left int64
}

func (t *tripwire) Read(p []byte) (int, error) {
	if int64(len(p)) > t.left {
		if t.left == 0 {
			panic("read past limit+1")
		}
		p = p[:t.left]
	}
	n, err := t.r.Read(p)
	t.left -= int64(n)
	return n, err
}
