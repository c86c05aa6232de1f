package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/storage/storagetest"
	"github.com/promanage/promanage/tenant"
)

const testSecretKey = "test-secret-key-for-signed-blob-urls-0123456789"

// ---- multipart helpers ----

type formPart struct {
	name, filename, contentType string
	body                        []byte
}

func fileOf(name string, body []byte) formPart {
	return formPart{name: "file", filename: name, body: body}
}

func multipartBody(t testing.TB, parts ...formPart) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.name)
		if p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		pw, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(p.body)
	}
	w.Close()
	return w.FormDataContentType(), buf.Bytes()
}

// raw sends a request with any body and content type.
func (c client) raw(method, path string, body io.Reader, contentType string, headers ...string) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c client) upload(status int, path string, parts ...formPart) response {
	c.t.Helper()
	ct, body := multipartBody(c.t, parts...)
	r := c.raw("POST", path, bytes.NewReader(body), ct)
	if r.Status != status {
		c.t.Fatalf("POST %s: status %d, want %d: %s", path, r.Status, status, r.Body)
	}
	return r
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func randomBytes(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// docFixture is a signed-up owner with a tenant and a project.
type docFixture struct {
	owner   client
	slug    string
	project string
}

func newDocFixture(t *testing.T, base, name string) docFixture {
	t.Helper()
	owner := client{t: t, base: base, token: testenv.SignUp(t, name).Token}
	slug := testenv.Slug(name)
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	r := owner.want(201, "POST", "/v1/tenants/"+slug+"/projects", map[string]any{"key": "DOC", "name": "Docs"})
	return docFixture{owner: owner, slug: slug, project: r.json(t)["id"].(string)}
}

func (f docFixture) docs() string {
	return "/v1/tenants/" + f.slug + "/projects/" + f.project + "/documents"
}
func (f docFixture) doc(id string) string {
	return "/v1/tenants/" + f.slug + "/documents/" + id
}

// ---- the suite on every backend ----

// TestDocumentsOnEveryBackend runs the same user-visible document behaviour
// through the API on file, mem, S3, GCS and Azure buckets: upload, new
// versions, restore, downloads compared by sha256, ?version=N, ranges (206,
// 416), metadata edits with If-Match, signed URLs fetched without a
// session, delete. Switching PROMANAGE_BLOB_URL changes nothing a client
// sees.
func TestDocumentsOnEveryBackend(t *testing.T) {
	backends := []struct {
		name  string
		start func(testing.TB) storagetest.Bucket
	}{
		{"File", storagetest.File},
		{"Mem", storagetest.Mem},
		{"S3", storagetest.S3},
		{"GCS", storagetest.GCS},
		{"Azure", storagetest.Azure},
	}
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			be := bk.start(t)
			base := server(t, "-blob-url", be.URL, "-secret-key", testSecretKey)
			documentLifecycle(t, base, be)
		})
	}
}

func documentLifecycle(t *testing.T, base string, be storagetest.Bucket) {
	f := newDocFixture(t, base, "docs")
	c := f.owner
	v1 := append([]byte("%PDF-1.7\n"), randomBytes(300<<10, 1)...)
	v2 := randomBytes(200<<10+7, 2)
	v3 := []byte("plain text, version three\n")

	r := c.upload(201, f.docs(),
		formPart{name: "title", body: []byte("Contract")},
		formPart{name: "metadata", body: []byte(`{"client": "ACME", "tags": ["legal", "2026"], "pages": 12}`)},
		fileOf("contract ü.pdf", v1))
	doc := r.json(t)
	id := doc["id"].(string)
	if doc["version"] != 1.0 || doc["size"] != float64(len(v1)) || doc["sha256"] != sha(v1) || doc["content_type"] != "application/pdf" ||
		doc["title"] != "Contract" || doc["project_id"] != f.project || doc["filename"] != "contract ü.pdf" || doc["etag"] == "" {
		t.Fatalf("upload answer: %s", r.Body)
	}
	if m := doc["metadata"].(map[string]any); m["client"] != "ACME" || m["pages"] != 12.0 {
		t.Fatalf("metadata: %s", r.Body)
	}
	if loc := r.Header.Get("Location"); loc != f.doc(id) {
		t.Fatalf("Location %q", loc)
	}

	r = c.upload(201, f.doc(id)+"/versions", fileOf("v2.bin", v2))
	if got := r.json(t); got["version"] != 2.0 || got["sha256"] != sha(v2) || got["content_type"] != "application/octet-stream" {
		t.Fatalf("v2: %s", r.Body)
	}
	r = c.upload(201, f.doc(id)+"/versions", formPart{name: "file", filename: "v3.txt", contentType: "application/pdf", body: v3})
	if got := r.json(t); got["version"] != 3.0 || got["content_type"] != "text/plain; charset=utf-8" {
		t.Fatalf("v3 (sniffed type must win over the declared one): %s", r.Body)
	}
	r = c.want(201, "POST", f.doc(id)+"/versions/1/restore", nil)
	if got := r.json(t); got["version"] != 4.0 || got["sha256"] != sha(v1) || got["size"] != float64(len(v1)) {
		t.Fatalf("restore: %s", r.Body)
	}
	c.want(404, "POST", f.doc(id)+"/versions/9/restore", nil)

	// Downloads, each compared by sha256.
	want := map[string][]byte{"1": v1, "2": v2, "3": v3, "4": v1, "": v1}
	for n, body := range want {
		path := f.doc(id) + "/content"
		if n != "" {
			path += "?version=" + n
		}
		r := c.want(200, "GET", path, nil)
		if sha(r.Body) != sha(body) {
			t.Fatalf("%s: content differs (%d bytes, want %d)", path, len(r.Body), len(body))
		}
		if r.Header.Get("ETag") != `"`+sha(body)+`"` || r.Header.Get("Content-Length") != fmt.Sprint(len(body)) ||
			!strings.HasPrefix(r.Header.Get("Content-Disposition"), "attachment;") {
			t.Fatalf("%s headers: %v", path, r.Header)
		}
	}
	r = c.want(200, "GET", f.doc(id)+"/content?version=1", nil)
	if r.Header.Get("Content-Type") != "application/pdf" || !strings.Contains(r.Header.Get("Content-Disposition"), `filename*=UTF-8''contract%20%C3%BC.pdf`) {
		t.Fatalf("v1 headers: %v", r.Header)
	}
	c.want(404, "GET", f.doc(id)+"/content?version=5", nil)
	c.want(422, "GET", f.doc(id)+"/content?version=zero", nil)
	c.want(304, "GET", f.doc(id)+"/content?version=2", nil, "If-None-Match", `"`+sha(v2)+`"`)

	// Ranges.
	r = c.want(206, "GET", f.doc(id)+"/content?version=2", nil, "Range", "bytes=100-199")
	if !bytes.Equal(r.Body, v2[100:200]) || r.Header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(v2)) {
		t.Fatalf("range 100-199: %d bytes, Content-Range %q", len(r.Body), r.Header.Get("Content-Range"))
	}
	r = c.want(206, "GET", f.doc(id)+"/content?version=2", nil, "Range", "bytes=-10")
	if !bytes.Equal(r.Body, v2[len(v2)-10:]) {
		t.Fatal("suffix range")
	}
	r = c.want(206, "GET", f.doc(id)+"/content?version=2", nil, "Range", fmt.Sprintf("bytes=%d-", len(v2)-3))
	if !bytes.Equal(r.Body, v2[len(v2)-3:]) {
		t.Fatal("open range")
	}
	r = c.want(416, "GET", f.doc(id)+"/content?version=2", nil, "Range", fmt.Sprintf("bytes=%d-", len(v2)))
	if r.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(v2)) {
		t.Fatalf("416 Content-Range %q", r.Header.Get("Content-Range"))
	}
	// A stale If-Range gets the whole content.
	r = c.want(200, "GET", f.doc(id)+"/content?version=2", nil, "Range", "bytes=0-9", "If-Range", `"stale"`)
	if len(r.Body) != len(v2) {
		t.Fatal("If-Range mismatch must send everything")
	}

	// Versions, newest first, with paging.
	r = c.want(200, "GET", f.doc(id)+"/versions?limit=3", nil)
	page := r.json(t)
	items := page["items"].([]any)
	if len(items) != 3 || items[0].(map[string]any)["version"] != 4.0 || items[0].(map[string]any)["restored_from"] != 1.0 ||
		items[2].(map[string]any)["version"] != 2.0 || page["next_cursor"] == nil {
		t.Fatalf("versions page 1: %s", r.Body)
	}
	r = c.want(200, "GET", f.doc(id)+"/versions?limit=3&cursor="+page["next_cursor"].(string), nil)
	if items := r.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["version"] != 1.0 {
		t.Fatalf("versions page 2: %s", r.Body)
	}

	// Metadata of the current version, and edits under If-Match.
	r = c.want(200, "GET", f.doc(id), nil)
	cur := r.json(t)
	if cur["version"] != 4.0 || cur["sha256"] != sha(v1) {
		t.Fatalf("current: %s", r.Body)
	}
	etag := r.Header.Get("ETag")
	c.want(428, "PATCH", f.doc(id), map[string]any{"title": "Signed contract"})
	c.want(412, "PATCH", f.doc(id), map[string]any{"title": "Signed contract"}, "If-Match", `"1"`)
	c.want(422, "PATCH", f.doc(id), map[string]any{"metadata": []int{1}}, "If-Match", etag)
	c.want(422, "PATCH", f.doc(id), map[string]any{"size": 1}, "If-Match", etag)
	r = c.want(200, "PATCH", f.doc(id), map[string]any{"title": "Signed contract", "metadata": map[string]any{"signed": true}}, "If-Match", etag)
	if got := r.json(t); got["title"] != "Signed contract" || got["metadata"].(map[string]any)["signed"] != true || got["etag"] == etag ||
		got["metadata"].(map[string]any)["client"] != nil {
		t.Fatalf("patch: %s", r.Body)
	}
	c.want(412, "PATCH", f.doc(id), map[string]any{"title": "again"}, "If-Match", etag)

	// Signed URL, fetched without any session.
	r = c.want(200, "GET", f.doc(id)+"/url?version=2", nil)
	signed := r.json(t)["url"].(string)
	if be.Reach != nil {
		signed = be.Reach(signed)
	}
	resp, err := http.Get(signed)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || sha(got) != sha(v2) {
		t.Fatalf("signed URL %s: status %d, %d bytes", signed, resp.StatusCode, len(got))
	}
	if strings.Contains(signed, storage.BlobsPath) {
		// Our own fallback: tampering and ranges.
		tampered := strings.Replace(signed, "%2Fv2", "%2Fv1", 1)
		if resp, err := http.Get(tampered); err != nil || resp.StatusCode != 403 {
			t.Fatalf("tampered URL %s: %v %v", tampered, resp.StatusCode, err)
		}
		req, _ := http.NewRequest("GET", signed, nil)
		req.Header.Set("Range", "bytes=0-0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 206 {
			t.Fatalf("range on signed URL: %v %v", resp.StatusCode, err)
		}
		resp.Body.Close()
	}

	// Usage counts every stored version.
	r = c.want(200, "GET", "/v1/tenants/"+f.slug, nil)
	st := r.json(t)["storage"].(map[string]any)
	if used := int(st["used_bytes"].(float64)); used != 2*len(v1)+len(v2)+len(v3) {
		t.Fatalf("used_bytes %d, want %d", used, 2*len(v1)+len(v2)+len(v3))
	}

	// The project's list, then delete.
	r = c.want(200, "GET", f.docs(), nil)
	if items := r.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id {
		t.Fatalf("list: %s", r.Body)
	}
	c.want(204, "DELETE", f.doc(id), nil)
	for _, p := range []string{"", "/content", "/versions", "/url"} {
		c.want(404, "GET", f.doc(id)+p, nil)
	}
	c.want(404, "DELETE", f.doc(id), nil)
	r = c.want(200, "GET", f.docs(), nil)
	if items := r.json(t)["items"].([]any); len(items) != 0 {
		t.Fatalf("deleted document listed: %s", r.Body)
	}
}

// ---- API behaviour (file bucket) ----

func setStorage(t *testing.T, slug string, s tenant.StorageSettings) {
	t.Helper()
	reg := tenant.NewRegistry(testenv.DB(t), nil)
	tn, err := reg.BySlug(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.SetStorageSettings(context.Background(), tn.ID, s); err != nil {
		t.Fatal(err)
	}
}

func usedBytes(t *testing.T, c client, slug string) int {
	t.Helper()
	r := c.want(200, "GET", "/v1/tenants/"+slug, nil)
	return int(r.json(t)["storage"].(map[string]any)["used_bytes"].(float64))
}

// blobFiles lists the files under a file bucket's directory.
func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	sort.Strings(files)
	return files
}

func TestDocumentsAPI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "blobs")
	base := server(t, "-blob-url", "file://"+filepath.ToSlash(dir), "-secret-key", testSecretKey)
	f := newDocFixture(t, base, "docapi")
	c := f.owner
	r := c.upload(201, f.docs(), fileOf("a.txt", []byte("hello")))
	id := r.json(t)["id"].(string)

	t.Run("OtherTenantGets404", func(t *testing.T) {
		g := newDocFixture(t, base, "docother")
		for _, p := range []string{"", "/versions", "/content", "/url"} {
			// Through the other tenant's path, and through ours as a stranger.
			g.owner.want(404, "GET", g.doc(id)+p, nil)
			g.owner.want(404, "GET", f.doc(id)+p, nil)
		}
		g.owner.upload(404, g.doc(id)+"/versions", fileOf("x", []byte("x")))
		g.owner.want(404, "POST", g.doc(id)+"/versions/1/restore", nil)
		g.owner.want(404, "DELETE", g.doc(id), nil)
		g.owner.upload(404, "/v1/tenants/"+g.slug+"/projects/"+f.project+"/documents", fileOf("x", []byte("x")))
	})

	t.Run("ViewerCannotUpload", func(t *testing.T) {
		u := testenv.SignUp(t, "docviewer")
		v := client{t: t, base: base, token: u.Token}
		v.want(200, "GET", "/v1/me", nil)
		c.want(201, "PUT", "/v1/tenants/"+f.slug+"/members/"+u.ID.String(), map[string]string{"role": "viewer"})
		v.upload(403, f.docs(), fileOf("v.txt", []byte("viewer")))
		v.upload(403, f.doc(id)+"/versions", fileOf("v.txt", []byte("viewer")))
		v.want(200, "GET", f.doc(id)+"/content", nil)
		c.want(200, "PUT", "/v1/tenants/"+f.slug+"/members/"+u.ID.String(), map[string]string{"role": "member"})
		v.upload(201, f.doc(id)+"/versions", fileOf("m.txt", []byte("member")))
		v.want(403, "DELETE", f.doc(id), nil) // managers delete
	})

	t.Run("BadInput", func(t *testing.T) {
		before := blobFiles(t, dir)
		c.want(415, "POST", f.docs(), map[string]string{"title": "json, not multipart"})
		c.upload(422, f.docs(), formPart{name: "title", body: []byte("no file")})
		c.upload(422, f.docs(), formPart{name: "metadata", body: []byte(`[1,2]`)}, fileOf("x", []byte("x")))
		c.upload(422, f.docs(), formPart{name: "metadata", body: []byte(`{"a":` + strings.Repeat(`{"a":`, 10) + `1` + strings.Repeat("}", 11))}, fileOf("x", []byte("x")))
		c.upload(422, f.docs(), formPart{name: "metadata", body: []byte(`{"big":"` + strings.Repeat("x", 17<<10) + `"}`)}, fileOf("x", []byte("x")))
		c.upload(422, f.docs(), formPart{name: "colour", body: []byte("red")}, fileOf("x", []byte("x")))
		c.upload(422, f.docs(), formPart{name: "title", body: []byte(strings.Repeat("t", 201))}, fileOf("x", []byte("x")))
		// A field after the file arrives too late for validation.
		c.upload(422, f.docs(), fileOf("x", []byte("x")), formPart{name: "title", body: []byte("late")})
		c.upload(422, f.doc(id)+"/versions", formPart{name: "title", body: []byte("versions take only a file")}, fileOf("x", []byte("x")))
		r := c.raw("POST", f.docs(), strings.NewReader("--nope\r\n garbage"), "multipart/form-data; boundary=xyz")
		if r.Status != 422 {
			t.Fatalf("malformed multipart: %d %s", r.Status, r.Body)
		}
		if after := blobFiles(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("refused uploads left blobs: %v -> %v", before, after)
		}
		if r := c.want(200, "GET", f.docs(), nil); len(r.json(t)["items"].([]any)) != 1 {
			t.Fatalf("refused uploads left documents: %s", r.Body)
		}
	})

	t.Run("Limits", func(t *testing.T) {
		g := newDocFixture(t, base, "doclimits")
		g.owner.upload(201, g.docs(), fileOf("seed.bin", randomBytes(1000, 3)))
		used := usedBytes(t, g.owner, g.slug)
		if used != 1000 {
			t.Fatalf("used %d", used)
		}
		setStorage(t, g.slug, tenant.StorageSettings{QuotaBytes: 4000, MaxFileBytes: 100000})
		// Over quota: refused before anything is stored, nothing consumed.
		r := g.owner.upload(413, g.docs(), fileOf("big.bin", randomBytes(5000, 4)))
		if r.json(t)["code"] != "quota_exceeded" {
			t.Fatalf("over quota: %s", r.Body)
		}
		if got := usedBytes(t, g.owner, g.slug); got != used {
			t.Fatalf("a refused upload consumed quota: %d -> %d", used, got)
		}
		// Chunked (no Content-Length): cut at what is left of the quota.
		ct, body := multipartBody(t, fileOf("chunked.bin", randomBytes(5000, 5)))
		r = g.owner.raw("POST", g.docs(), io.MultiReader(bytes.NewReader(body)), ct) // MultiReader hides the length
		if r.Status != 413 || r.json(t)["code"] != "quota_exceeded" {
			t.Fatalf("chunked over quota: %d %s", r.Status, r.Body)
		}
		// Over the file size limit.
		setStorage(t, g.slug, tenant.StorageSettings{QuotaBytes: 1 << 30, MaxFileBytes: 2000})
		r = g.owner.upload(413, g.docs(), fileOf("big.bin", randomBytes(3000, 6)))
		if r.json(t)["code"] != "too_large" {
			t.Fatalf("over max file size: %s", r.Body)
		}
		g.owner.upload(201, g.docs(), fileOf("fits.bin", randomBytes(2000, 7)))
		// Content-type allowlist, checked against the sniffed type.
		setStorage(t, g.slug, tenant.StorageSettings{AllowedContentTypes: []string{"image/*", "application/pdf"}})
		g.owner.upload(415, g.docs(), formPart{name: "file", filename: "fake.pdf", contentType: "application/pdf", body: []byte("<html><script>alert(1)</script>")})
		g.owner.upload(201, g.docs(), fileOf("real.pdf", []byte("%PDF-1.4\n...")))
		g.owner.upload(201, g.docs(), fileOf("pic.png", append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(100, 8)...)))
		r = g.owner.want(200, "GET", "/v1/tenants/"+g.slug, nil)
		st := r.json(t)["storage"].(map[string]any)
		if st["max_file_bytes"] != float64(2<<30) || st["quota_bytes"] != float64(50<<30) || len(st["allowed_content_types"].([]any)) != 2 {
			t.Fatalf("storage view: %s", r.Body)
		}
		if r := g.owner.want(200, "GET", g.docs(), nil); len(r.json(t)["items"].([]any)) != 4 {
			t.Fatalf("documents: %s", r.Body)
		}
	})

	t.Run("CutOffUploadLeavesNothing", func(t *testing.T) {
		g := newDocFixture(t, base, "doccut")
		before := blobFiles(t, dir)
		ct, body := multipartBody(t, formPart{name: "title", body: []byte("cut off")}, fileOf("half.bin", randomBytes(1<<20, 9)))
		u, _ := url.Parse(base)
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
			g.docs(), u.Host, g.owner.token, ct, len(body))
		conn.Write(body[:len(body)/2])
		time.Sleep(300 * time.Millisecond) // the server is streaming into the bucket
		conn.Close()
		// The server notices, aborts the write and releases the reservation.
		deadline := time.Now().Add(10 * time.Second)
		for usedBytes(t, g.owner, g.slug) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("reservation not released: used %d", usedBytes(t, g.owner, g.slug))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if r := g.owner.want(200, "GET", g.docs(), nil); len(r.json(t)["items"].([]any)) != 0 {
			t.Fatalf("cut-off upload left a document: %s", r.Body)
		}
		if after := blobFiles(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("cut-off upload left blobs: %v -> %v", before, after)
		}
		// The next version number is still 2.
		id := g.owner.upload(201, g.docs(), fileOf("ok.txt", []byte("ok"))).json(t)["id"].(string)
		conn, err = net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		ct, body = multipartBody(t, fileOf("half.bin", randomBytes(1<<20, 10)))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
			g.doc(id)+"/versions", u.Host, g.owner.token, ct, len(body))
		conn.Write(body[:len(body)/2])
		time.Sleep(300 * time.Millisecond)
		conn.Close()
		for usedBytes(t, g.owner, g.slug) != 2 {
			if time.Now().After(deadline) {
				t.Fatal("version reservation not released")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if v := g.owner.upload(201, g.doc(id)+"/versions", fileOf("v2.txt", []byte("v2"))).json(t)["version"]; v != 2.0 {
			t.Fatalf("after a cut-off upload the next version is %v, want 2", v)
		}
	})

	t.Run("ConcurrentVersionsAreConsecutive", func(t *testing.T) {
		const n = 6
		var wg sync.WaitGroup
		versions := make(chan int, n)
		for i := range n {
			wg.Go(func() {
				ct, body := multipartBody(t, fileOf("c.bin", randomBytes(64<<10, uint64(100+i))))
				req, _ := http.NewRequest("POST", base+f.doc(id)+"/versions", bytes.NewReader(body))
				req.Header.Set("Content-Type", ct)
				req.Header.Set("Authorization", "Bearer "+c.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var d struct{ Version int }
				if resp.StatusCode != 201 || json.NewDecoder(resp.Body).Decode(&d) != nil {
					t.Errorf("concurrent upload: status %d", resp.StatusCode)
					return
				}
				versions <- d.Version
			})
		}
		wg.Wait()
		close(versions)
		var got []int
		for v := range versions {
			got = append(got, v)
		}
		sort.Ints(got)
		for i := 1; i < len(got); i++ {
			if got[i] != got[i-1]+1 {
				t.Fatalf("versions not distinct and consecutive: %v", got)
			}
		}
		r := c.want(200, "GET", f.doc(id)+"/versions?limit=200", nil)
		items := r.json(t)["items"].([]any)
		if len(got) != n || int(items[0].(map[string]any)["version"].(float64)) != got[n-1] || len(items) != got[n-1] {
			t.Fatalf("versions %v, list %s", got, r.Body)
		}
	})

	t.Run("JSONBodiesStayLimited", func(t *testing.T) {
		// Bodies stream from the socket now; JSON routes still read at most
		// 1 MiB, with or without a Content-Length.
		big := `{"key":"BIG","name":"` + strings.Repeat("x", 2<<20) + `"}`
		r := c.raw("POST", "/v1/tenants/"+f.slug+"/projects", strings.NewReader(big), "application/json")
		if r.Status != 413 {
			t.Fatalf("2 MiB JSON: %d %s", r.Status, r.Body)
		}
		r = c.raw("POST", "/v1/tenants/"+f.slug+"/projects", io.MultiReader(strings.NewReader(big)), "application/json")
		if r.Status != 413 {
			t.Fatalf("2 MiB chunked JSON: %d %s", r.Status, r.Body)
		}
		r = c.raw("POST", "/v1/tenants/"+f.slug+"/projects", strings.NewReader(`{"key":"OK1","name":"fine"}`), "application/json", "Content-Encoding", "gzip")
		if r.Status != 415 {
			t.Fatalf("gzip JSON: %d %s", r.Status, r.Body)
		}
		c.want(201, "POST", "/v1/tenants/"+f.slug+"/projects", map[string]string{"key": "OK2", "name": "fine"})
	})

	t.Run("SignedURLs", func(t *testing.T) {
		r := c.want(200, "GET", f.doc(id)+"/url?version=1&expires_in=60", nil)
		u := r.json(t)["url"].(string)
		if !strings.HasPrefix(u, base+storage.BlobsPath+"?") {
			t.Fatalf("fallback URL %s", u)
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello" || resp.Header.Get("ETag") != `"`+sha([]byte("hello"))+`"` {
			t.Fatalf("signed fetch: %d %q", resp.StatusCode, b)
		}
		c.want(422, "GET", f.doc(id)+"/url?expires_in=5", nil)
		// Expired and forged links.
		signer, _ := storage.NewSigner([]byte(testSecretKey), base)
		key := storage.BlobsPath + "?" + strings.SplitN(signer.Sign("tenants/x", time.Now().Add(-time.Minute)), "?", 2)[1]
		anon := client{t: t, base: base}
		if r := anon.want(403, "GET", key, nil); !strings.Contains(string(r.Body), "expired") {
			t.Fatalf("expired: %s", r.Body)
		}
		other, _ := storage.NewSigner([]byte(strings.Repeat("k", 40)), base)
		forged := strings.SplitN(other.Sign(strings.TrimPrefix(u, ""), time.Now().Add(time.Hour)), "?", 2)[1]
		anon.want(403, "GET", storage.BlobsPath+"?"+forged, nil)
		anon.want(403, "GET", storage.BlobsPath, nil)
	})
}
