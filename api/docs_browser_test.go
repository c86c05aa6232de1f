package api

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// skipOrFail skips loudly, or fails when scripts/test.sh said the
// prerequisite must be there (env=require: PROMANAGE_TEST_DOCS for the
// renderer and the validators it installs, PROMANAGE_TEST_BROWSER when
// chromium is installed): under `make test` a missing prerequisite is a
// failure, never a pass.
func skipOrFail(t *testing.T, env, why string) {
	t.Helper()
	if os.Getenv(env) == "require" {
		t.Fatal(why)
	}
	t.Skip("SKIPPED, NOT PASSED: " + why)
}

// artifactsDir is .data/artifacts at the repository's root: the screenshots
// of the reference page are kept there.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".data", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The reference page, opened in headless Chromium (Debian's chromium, no
// network: the page may only reach this server) exactly as a reader would:
// Redoc renders every operation of the document, the error catalogue,
// schemas and examples, search works, and the page logs no error to the
// console (a refused resource, a CSP violation or an exception would).
// Screenshots go to .data/artifacts/.
func TestDocsPageInChromium(t *testing.T) {
	if loadDocsAsset(docsBundle) == nil {
		skipOrFail(t, "PROMANAGE_TEST_DOCS", "the reference assets are not built into this test binary (run scripts/docs-assets.sh)")
	}
	browser := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		skipOrFail(t, "PROMANAGE_TEST_BROWSER", "no chromium on PATH (apt-get install chromium)")
	}

	s := New(Deps{}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.App().Listener(ln) }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	base := "http://" + ln.Addr().String()

	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1440, 900))
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", browser, err)
	}

	var mu sync.Mutex
	var logged []chromedp.ConsoleMessage
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			logged = append(logged, m)
			mu.Unlock()
		}
	}()

	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, item := range doc["paths"].(map[string]any) {
		for m, op := range item.(map[string]any) {
			if m != "parameters" {
				ops = append(ops, op.(map[string]any)["operationId"].(string))
			}
		}
	}
	sort.Strings(ops)

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/docs")); err != nil {
		t.Fatal(err)
	}
	// Redoc renders every operation as a section "operation/<operationId>".
	const sections = `Array.from(document.querySelectorAll('[data-section-id^="operation/"]')).map(e => e.getAttribute('data-section-id').slice(10))`
	rendered, err := chromedp.Run(ctx, chromedp.Poll[[]string](
		fmt.Sprintf(`(() => { const s = %s; return s.length >= %d ? s : null })()`, sections, len(ops)),
		chromedp.WithPollingTimeout(90*time.Second)))
	if err != nil {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](sections))
		t.Fatalf("the page did not render the %d operations in 90s (%d rendered): %v", len(ops), len(got), err)
	}
	t.Logf("rendered %d operations in %s", len(ops), time.Since(start).Round(time.Millisecond))
	for _, id := range ops {
		if !slices.Contains(rendered, id) {
			t.Errorf("operation %s is not on the page", id)
		}
	}

	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	// The error catalogue (the introduction's table) lists every code.
	codes := doc["components"].(map[string]any)["schemas"].(map[string]any)["ErrorCode"].(map[string]any)["enum"].([]any)
	for _, c := range codes {
		if !strings.Contains(text, c.(string)) {
			t.Errorf("error code %s is not visible on the page", c)
		}
	}
	// Schemas (a request body's members with their constraints) and
	// examples (the response samples built from the document's examples).
	for _, want := range []string{"amount_minor", "Website relaunch", "REQUEST BODY SCHEMA", "Response samples", "x-permission"} {
		if !strings.Contains(strings.ToUpper(text), strings.ToUpper(want)) {
			t.Errorf("%q is not visible on the page", want)
		}
	}

	dir := artifactsDir(t)
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	writeArtifact(t, filepath.Join(dir, "docs.png"), shot)

	// Search finds an operation by its words (Redoc's search worker runs
	// under the page's CSP).
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := chromedp.Do(sctx, chromedp.SendKeys(chromedp.CSS(`input[aria-label="Search"]`), "restore")); err != nil {
		t.Fatalf("search box: %v", err)
	}
	found, err := chromedp.Run(sctx, chromedp.Poll[string](
		`(() => { const r = document.querySelector('[data-role="search:results"] li'); return r ? r.innerText : null })()`,
		chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil || !strings.Contains(strings.ToLower(found), "restore") {
		t.Errorf("search for 'restore' found %q (%v)", found, err)
	}
	shot, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err == nil {
		writeArtifact(t, filepath.Join(dir, "docs-search.png"), shot)
	}

	// One operation in full: its schema, responses and samples.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/docs?view=createProject#operation/createProject"), chromedp.Sleep(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if shot, err = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		writeArtifact(t, filepath.Join(dir, "docs-createProject.png"), shot)
	}

	time.Sleep(500 * time.Millisecond) // late messages
	mu.Lock()
	defer mu.Unlock()
	for _, m := range logged {
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleException:
			t.Errorf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
		case chromedp.ConsoleWarning:
			t.Logf("console warning: %s", m.Text)
		}
	}
}

func writeArtifact(t *testing.T, path string, b []byte) {
	t.Helper()
	if len(b) == 0 {
		t.Errorf("%s: empty screenshot", path)
		return
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("kept %s (%d bytes)", path, len(b))
}
