package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strings"
	"testing"
)

// requireDocsAssets skips a test of the reference page when this build has
// no renderer assets (a plain `go test` without scripts/docs-assets.sh),
// loudly; scripts/test.sh builds them and sets PROMANAGE_TEST_DOCS=require,
// so under `make test` their absence fails.
func requireDocsAssets(t *testing.T, status int) {
	t.Helper()
	if status != 503 {
		return
	}
	if os.Getenv("PROMANAGE_TEST_DOCS") == "require" {
		t.Fatal("/docs answers 503: the reference assets were not built into this binary (scripts/docs-assets.sh)")
	}
	t.Skip("SKIPPED, NOT PASSED: the reference assets are not built (run scripts/docs-assets.sh, or make test)")
}

// /docs is the Redoc page over /openapi.json, and its script comes from the
// binary itself (gzip'd on request, cached by ETag): no CDN.
func TestDocsPage(t *testing.T) {
	base := server(t)
	anon := client{t: t, base: base}
	r := anon.do("GET", "/docs", nil)
	requireDocsAssets(t, r.Status)
	if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /docs: %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	page := string(r.Body)
	for _, want := range []string{`<redoc spec-url="/openapi.json"`, `<script src="/docs/assets/redoc.standalone.js"></script>`, "Content-Security-Policy"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "https://") {
		t.Error("the page refers to another origin")
	}
	js := anon.want(200, "GET", "/docs/assets/redoc.standalone.js", nil, "Accept-Encoding", "identity")
	if !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") || len(js.Body) < 500_000 {
		t.Fatalf("the bundle: %s, %d bytes", js.Header.Get("Content-Type"), len(js.Body))
	}
	if bytes.Contains(js.Body, []byte("cdn.redoc.ly")) {
		t.Error("the bundle still loads its logo from cdn.redoc.ly")
	}
	gz := anon.want(200, "GET", "/docs/assets/redoc.standalone.js", nil, "Accept-Encoding", "gzip")
	if gz.Header.Get("Content-Encoding") != "gzip" || len(gz.Body) > len(js.Body)/2 {
		t.Fatalf("gzip: %q, %d bytes", gz.Header.Get("Content-Encoding"), len(gz.Body))
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz.Body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(zr); !bytes.Equal(plain, js.Body) {
		t.Fatal("the gzip'd bundle differs from the bundle")
	}
	anon.want(304, "GET", "/docs/assets/redoc.standalone.js", nil, "If-None-Match", js.Header.Get("ETag"))
	anon.want(200, "GET", "/docs/assets/redoc.LICENSE.txt", nil)
	for _, bad := range []string{"nope.js", ".redoc", "..%2Fopenapi.go", "index.html"} {
		anon.want(404, "GET", "/docs/assets/"+bad, nil)
	}
}
