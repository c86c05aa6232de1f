package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/plugins"
)

func pluginFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", path))
	if err != nil {
		t.Fatalf("read %s (rebuild with `make plugins`): %v", path, err)
	}
	return b
}

// upload posts a plugin as multipart/form-data (module + manifest).
func (c client) uploadPlugin(wasm []byte, manifest any, slug string) response {
	c.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("module", "plugin.wasm")
	fw.Write(wasm)
	m, ok := manifest.(string)
	if !ok {
		b, _ := json.Marshal(manifest)
		m = string(b)
	}
	mw.WriteField("manifest", m)
	mw.Close()
	req, _ := http.NewRequest("POST", c.base+"/v1/tenants/"+slug+"/plugins", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (c client) wantPluginUpload(status int, wasm []byte, manifest any, slug string) map[string]any {
	c.t.Helper()
	r := c.uploadPlugin(wasm, manifest, slug)
	if r.Status != status {
		c.t.Fatalf("upload %v: status %d, want %d: %s", manifest, r.Status, status, r.Body)
	}
	return r.json(c.t)
}

func pluginTenant(t *testing.T, c client, prefix string) string {
	t.Helper()
	slug := testenv.Slug(prefix)
	c.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": prefix})
	return slug
}

func projectBody(key string, budgetMinor int64) map[string]any {
	return map[string]any{"key": key, "name": "Project " + key, "budget": map[string]any{"amount_minor": budgetMinor, "currency": "EUR"}}
}

// eventually retries f until it returns nil or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The budget-guard example as a customer uses it: upload with a cap, a
// project over the cap is refused with the plugin's message and nothing is
// committed, one under the cap is created; naming-policy (hand-written WAT)
// rejects a bad key; versions, settings, dry run, invocation log,
// permissions and tenant isolation.
func TestPluginValidationHooks(t *testing.T) {
	base := pluginServer(t)
	aliceUser := testenv.SignUp(t, "alice")
	alice := client{t: t, base: base, token: aliceUser.Token}
	bob := client{t: t, base: base, token: testenv.SignUp(t, "bob").Token}
	viewerUser := testenv.SignUp(t, "viewer")
	viewer := client{t: t, base: base, token: viewerUser.Token}
	viewer.want(200, "GET", "/v1/me", nil)
	a := pluginTenant(t, alice, "plug")
	b := pluginTenant(t, bob, "plugb")
	alice.want(201, "PUT", "/v1/tenants/"+a+"/members/"+viewerUser.ID.String(), map[string]string{"role": "viewer"})

	guard := pluginFile(t, "examples/plugins/budget-guard/budget-guard.wasm")
	manifest := map[string]any{"name": "budget-guard", "hooks": []string{"project.validate", "expense.validate"},
		"config": map[string]any{"max_budget_minor": 1000000}}
	p := alice.wantPluginUpload(201, guard, manifest, a)
	id := p["id"].(string)
	if s, _ := p["signing_secret"].(string); !strings.HasPrefix(s, "whsec_") {
		t.Fatalf("the creating upload shows no signing secret: %v", p)
	}
	if p["version"].(float64) != 1 || p["enabled"] != true || p["failure_policy"] != "fail_closed" {
		t.Fatalf("plugin: %v", p)
	}

	t.Run("OverTheCapIsRejectedAndNothingCommitted", func(t *testing.T) {
		r := alice.want(422, "POST", "/v1/tenants/"+a+"/projects", projectBody("BIG", 1000001))
		body := r.json(t)
		if body["code"] != "plugin_rejected" || body["plugin"] != "budget-guard" ||
			!strings.Contains(body["detail"].(string), "exceeds the cap of 10000.00 EUR") {
			t.Fatalf("rejection: %s", r.Body)
		}
		r = alice.want(200, "GET", "/v1/tenants/"+a+"/projects", nil)
		if items := r.json(t)["items"].([]any); len(items) != 0 {
			t.Fatalf("a rejected project was committed: %s", r.Body)
		}
		alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("SMALL", 999999))
	})

	t.Run("Permissions", func(t *testing.T) {
		viewer.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil)
		if r := viewer.uploadPlugin(guard, manifest, a); r.Status != 403 {
			t.Fatalf("viewer upload: %d %s", r.Status, r.Body)
		}
		viewer.want(403, "DELETE", "/v1/tenants/"+a+"/plugins/"+id, nil)
		viewer.want(403, "POST", "/v1/tenants/"+a+"/plugins/"+id+"/test", map[string]any{"hook": "project.validate"})
		bob.want(404, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil)
		bob.want(404, "GET", "/v1/tenants/"+b+"/plugins/"+id, nil)
		bob.want(404, "GET", "/v1/tenants/"+b+"/plugins/"+id+"/invocations", nil)
		if r := bob.uploadPlugin(guard, manifest, a); r.Status != 404 {
			t.Fatalf("upload into another tenant: %d", r.Status)
		}
		// Bob's tenant has no plugin: his big project is fine.
		bob.want(201, "POST", "/v1/tenants/"+b+"/projects", projectBody("BIG", 5000000))
	})

	t.Run("GetListNoSecret", func(t *testing.T) {
		r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins", nil)
		items := r.json(t)["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["signing_secret"] != nil {
			t.Fatalf("list: %s", r.Body)
		}
		r = alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil)
		if r.json(t)["signing_secret"] != nil || r.Header.Get("ETag") == "" {
			t.Fatalf("get: %s", r.Body)
		}
	})

	t.Run("DryRun", func(t *testing.T) {
		r := alice.want(200, "POST", "/v1/tenants/"+a+"/plugins/"+id+"/test", map[string]any{
			"hook": "project.validate", "event": projectBody("HUGE", 2000000)})
		res := r.json(t)
		result, _ := res["result"].(map[string]any)
		if result == nil || result["allow"] != false || res["duration_ms"].(float64) <= 0 || len(res["logs"].([]any)) == 0 {
			t.Fatalf("dry run: %s", r.Body)
		}
		r = alice.want(200, "POST", "/v1/tenants/"+a+"/plugins/"+id+"/test", map[string]any{
			"hook": "project.validate", "event": projectBody("HUGE", 2000000), "config": map[string]any{"max_budget_minor": 5000000}})
		if r.json(t)["result"].(map[string]any)["allow"] != true {
			t.Fatalf("dry run with a config override: %s", r.Body)
		}
		alice.want(422, "POST", "/v1/tenants/"+a+"/plugins/"+id+"/test", map[string]any{"hook": "task.done"})
		alice.want(200, "GET", "/v1/tenants/"+a+"/projects?q=HUGE", nil)
	})

	t.Run("InvocationLog", func(t *testing.T) {
		waitFor(t, 5*time.Second, func() error {
			r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/invocations", nil)
			seen := map[string]bool{}
			for _, it := range r.json(t)["items"].([]any) {
				inv := it.(map[string]any)
				seen[inv["outcome"].(string)] = true
				if inv["hook"] != "project.validate" {
					return fmt.Errorf("invocation hook %v", inv["hook"])
				}
			}
			if !seen["rejected"] || !seen["allowed"] {
				return fmt.Errorf("invocations lack a rejection and an allowance: %s", r.Body)
			}
			return nil
		})
		r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/invocations?limit=1", nil)
		page := r.json(t)
		if len(page["items"].([]any)) != 1 || page["next_cursor"] == nil {
			t.Fatalf("pagination: %s", r.Body)
		}
		alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/invocations?limit=1&cursor="+page["next_cursor"].(string), nil)
		alice.want(422, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/invocations?cursor=nope", nil)
	})

	t.Run("NewVersionAndSettings", func(t *testing.T) {
		manifest["config"] = map[string]any{"max_budget_minor": 3000000}
		v2 := alice.wantPluginUpload(201, guard, manifest, a)
		if v2["id"] != id || v2["version"].(float64) != 2 || v2["signing_secret"] != nil {
			t.Fatalf("re-upload: %v", v2)
		}
		alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("MID", 2500000))
		alice.want(422, "POST", "/v1/tenants/"+a+"/projects", projectBody("TOOBIG", 3000001))

		r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil)
		etag := r.Header.Get("ETag")
		alice.want(428, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"enabled": false})
		alice.want(412, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"enabled": false}, "If-Match", `"999"`)
		alice.want(422, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"failure_policy": "maybe"}, "If-Match", etag)
		alice.want(422, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"timeout_ms": 60000}, "If-Match", etag)
		alice.want(422, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"allowed_hosts": []string{"http://x"}}, "If-Match", etag)
		alice.want(422, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"name": "renamed"}, "If-Match", etag)
		r = alice.want(200, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"enabled": false}, "If-Match", etag)
		if r.json(t)["enabled"] != false || r.Header.Get("ETag") == etag {
			t.Fatalf("disable: %s", r.Body)
		}
		// Disabled: no longer runs.
		alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("HUGE", 90000000))
		r = alice.want(200, "PATCH", "/v1/tenants/"+a+"/plugins/"+id, map[string]any{"enabled": true, "config": map[string]any{"max_budget_minor": 100}},
			"If-Match", r.Header.Get("ETag"))
		r = alice.want(422, "POST", "/v1/tenants/"+a+"/projects", projectBody("TINY", 101))
		if !strings.Contains(string(r.Body), "1.00 EUR") {
			t.Fatalf("new config not applied: %s", r.Body)
		}
	})

	t.Run("NamingPolicyWAT", func(t *testing.T) {
		c := pluginTenant(t, alice, "naming")
		alice.wantPluginUpload(201, pluginFile(t, "examples/plugins/naming-policy/naming-policy.wasm"),
			map[string]any{"name": "naming-policy", "hooks": []string{"project.validate"}}, c)
		r := alice.want(422, "POST", "/v1/tenants/"+c+"/projects", projectBody("WEB-1", 0))
		if body := r.json(t); body["code"] != "plugin_rejected" || body["plugin"] != "naming-policy" {
			t.Fatalf("naming-policy: %s", r.Body)
		}
		alice.want(201, "POST", "/v1/tenants/"+c+"/projects", projectBody("WEB1", 0))
	})

	t.Run("Delete", func(t *testing.T) {
		alice.want(204, "DELETE", "/v1/tenants/"+a+"/plugins/"+id, nil)
		alice.want(404, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil)
		alice.want(404, "DELETE", "/v1/tenants/"+a+"/plugins/"+id, nil)
		alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("AFTER", 90000000))
		r := alice.want(200, "GET", "/v1/tenants/"+a+"/audit?object_type=plugin", nil)
		if !strings.Contains(string(r.Body), "plugin.upload") || !strings.Contains(string(r.Body), "plugin.delete") {
			t.Fatalf("audit log lacks plugin changes: %s", r.Body)
		}
	})
}

// Bad modules and manifests get 422 with the reason, never a 500.
func TestPluginUploadRefusesBadModules(t *testing.T) {
	base := pluginServer(t, "-plugin-max-module-bytes", "65536")
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	a := pluginTenant(t, alice, "badmod")
	naming := pluginFile(t, "examples/plugins/naming-policy/naming-policy.wasm")
	m := map[string]any{"name": "bad", "hooks": []string{"project.validate"}}
	oversize := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 70000)...)
	cases := []struct {
		name   string
		wasm   []byte
		field  string
		reason string
	}{
		{"Garbage", []byte("this is not webassembly at all"), "module", "not a WebAssembly"},
		{"Truncated", naming[:len(naming)/2], "module", ""},
		{"ForbiddenImport", pluginFile(t, "plugins/testdata/import_path_open.wasm"), "module", "path_open"},
		{"UnknownImport", pluginFile(t, "plugins/testdata/import_unknown.wasm"), "module", "not allowed"},
		{"HugeMemory", pluginFile(t, "plugins/testdata/huge_memory.wasm"), "module", "memory"},
		{"MissingExport", pluginFile(t, "plugins/testdata/no_handle.wasm"), "module", "pm_handle"},
		{"InitNeverReturns", pluginFile(t, "plugins/testdata/init_loop.wasm"), "module", ""},
		{"OverSize", oversize, "module", "larger than the limit of 65536"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := alice.wantPluginUpload(422, tc.wasm, m, a)
			errs, _ := body["errors"].([]any)
			if len(errs) == 0 {
				t.Fatalf("no reason: %v", body)
			}
			e := errs[0].(map[string]any)
			if e["field"] != tc.field || !strings.Contains(e["message"].(string), tc.reason) {
				t.Fatalf("reason: %v", e)
			}
		})
	}
	t.Run("BadManifests", func(t *testing.T) {
		for _, bad := range []any{
			`{"name": "x", "hooks": ["project.validate"]}`,
			`{"name": "ok-name", "hooks": ["project.explode"]}`,
			`{"name": "ok-name", "hooks": ["project.validate"], "failure_policy": "sometimes"}`,
			`{"name": "ok-name", "hooks": ["project.validate"], "colour": "red"}`,
			`not json`,
		} {
			if r := alice.uploadPlugin(naming, bad, a); r.Status != 422 {
				t.Errorf("manifest %v: status %d: %s", bad, r.Status, r.Body)
			}
		}
	})
	alice.want(415, "POST", "/v1/tenants/"+a+"/plugins", map[string]any{"module": "x"})
	r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins", nil)
	if items := r.json(t)["items"].([]any); len(items) != 0 {
		t.Fatalf("a refused upload was stored: %s", r.Body)
	}
}

// A plugin that traps or loops is contained: fail_closed refuses the change
// saying the plugin failed, fail_open lets it through; meanwhile another
// tenant's requests keep succeeding with normal latency.
func TestPluginFailurePoliciesAndIsolation(t *testing.T) {
	base := pluginServer(t)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	bob := client{t: t, base: base, token: testenv.SignUp(t, "bob").Token}
	a := pluginTenant(t, alice, "hostile")
	b := pluginTenant(t, bob, "calm")
	bob.wantPluginUpload(201, pluginFile(t, "examples/plugins/naming-policy/naming-policy.wasm"),
		map[string]any{"name": "naming-policy", "hooks": []string{"project.validate"}}, b)

	trap := alice.wantPluginUpload(201, pluginFile(t, "plugins/testdata/hostile.wasm"),
		map[string]any{"name": "trapper", "hooks": []string{"project.validate"}}, a)
	r := alice.want(422, "POST", "/v1/tenants/"+a+"/projects", projectBody("TRAP", 1))
	if body := r.json(t); body["plugin"] != "trapper" || !strings.Contains(body["detail"].(string), "failed (trapped)") {
		t.Fatalf("fail_closed trap: %s", r.Body)
	}
	r = alice.want(200, "PATCH", "/v1/tenants/"+a+"/plugins/"+trap["id"].(string), map[string]any{"failure_policy": "fail_open"}, "If-Match", trap["etag"].(string))
	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("TRAP", 1))

	loop := alice.wantPluginUpload(201, pluginFile(t, "plugins/testdata/loop.wasm"),
		map[string]any{"name": "looper", "hooks": []string{"project.validate"}, "priority": -1}, a)
	start := time.Now()
	r = alice.want(422, "POST", "/v1/tenants/"+a+"/projects", projectBody("LOOP", 1))
	if body := r.json(t); body["plugin"] != "looper" || !strings.Contains(body["detail"].(string), "timed out") {
		t.Fatalf("fail_closed loop: %s", r.Body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a looping plugin held the request for %v", d)
	}
	alice.want(200, "PATCH", "/v1/tenants/"+a+"/plugins/"+loop["id"].(string), map[string]any{"failure_policy": "fail_open"}, "If-Match", loop["etag"].(string))
	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("LOOP", 1))

	// Noisy neighbour: 24 concurrent requests of tenant A, each running the
	// looping and the trapping plugin, while tenant B creates projects.
	var wg sync.WaitGroup
	var aFailures atomic.Int64
	stop := make(chan struct{})
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				r := alice.do("POST", "/v1/tenants/"+a+"/projects", projectBody(fmt.Sprintf("N%dX%d", i, n), 1))
				if r.Status >= 500 {
					aFailures.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	var slowest time.Duration
	for i := range 15 {
		start := time.Now()
		bob.want(201, "POST", "/v1/tenants/"+b+"/projects", projectBody(fmt.Sprintf("B%d", i), 1))
		bob.want(200, "GET", "/v1/tenants/"+b+"/projects?limit=5", nil)
		slowest = max(slowest, time.Since(start))
	}
	close(stop)
	wg.Wait()
	if slowest > 1500*time.Millisecond {
		t.Errorf("tenant B's slowest create+list took %v while tenant A's plugins misbehaved", slowest)
	}
	if n := aFailures.Load(); n > 0 {
		t.Errorf("tenant A got %d server errors (a plugin failure must follow its policy, never 5xx)", n)
	}
	bob.want(422, "POST", "/v1/tenants/"+b+"/projects", projectBody("BAD-KEY", 1)) // B's own plugin still runs
	alice.want(200, "GET", "/healthz", nil)                                        // the server survived
}

// startWorker runs `promanage worker` against the test services until the
// test ends, with the secret key of pluginServer (a later -secret-key in
// extra replaces it).
func startWorker(t *testing.T, extra ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := NewMain(io.Discard, io.Discard)
	args := append([]string{"worker", "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(),
		"-kratos-public-url", testenv.KratosURL(), "-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir(),
		"-log-level", "error", "-secret-key", pluginSecretKey}, extra...)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
}

// webhookReceiver is a local webhook endpoint that answers 503 until up is set.
type webhookReceiver struct {
	mu   sync.Mutex
	up   atomic.Bool
	hits []receivedWebhook
	srv  *httptest.Server
}

type receivedWebhook struct {
	header http.Header
	body   []byte
	status int
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	rc := &webhookReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := http.StatusServiceUnavailable
		if rc.up.Load() {
			status = http.StatusNoContent
		}
		rc.mu.Lock()
		rc.hits = append(rc.hits, receivedWebhook{header: r.Header.Clone(), body: b, status: status})
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *webhookReceiver) received() []receivedWebhook {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedWebhook(nil), rc.hits...)
}

// webhook-notifier delivers a signed webhook for project.created to a local
// receiver (the operator allowed private addresses); while the receiver is
// down the event is retried with backoff, with the same delivery id, and
// the webhook arrives once it is back.
func TestPluginWebhookDelivery(t *testing.T) {
	base := pluginServer(t)
	startWorker(t, "-plugin-allow-private-addresses", "true")
	rc := newWebhookReceiver(t)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	a := pluginTenant(t, alice, "hooks")
	p := alice.wantPluginUpload(201, pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm"), map[string]any{
		"name": "webhook-notifier", "hooks": []string{"project.created"},
		"config":        map[string]any{"url": rc.srv.URL + "/promanage", "headers": map[string]string{"X-Team": "infra"}},
		"allowed_hosts": []string{"127.0.0.1"}}, a)
	secret := []byte(p["signing_secret"].(string))
	id := p["id"].(string)

	// Dry run: the plugin's deliveries are shown, nothing is sent.
	r := alice.want(200, "POST", "/v1/tenants/"+a+"/plugins/"+id+"/test", map[string]any{
		"hook": "project.created", "event": map[string]any{"data": map[string]any{"key": "DRY", "name": "Dry"}}})
	if ds := r.json(t)["result"].(map[string]any)["deliveries"].([]any); len(ds) != 1 {
		t.Fatalf("dry run: %s", r.Body)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(rc.received()); n != 0 {
		t.Fatalf("the dry run delivered %d webhooks", n)
	}

	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("HOOK", 1))
	waitFor(t, 20*time.Second, func() error {
		if len(rc.received()) == 0 {
			return fmt.Errorf("no attempt reached the receiver")
		}
		return nil
	})
	rc.up.Store(true) // the receiver comes back
	var got receivedWebhook
	waitFor(t, 30*time.Second, func() error {
		for _, h := range rc.received() {
			if h.status == http.StatusNoContent {
				got = h
				return nil
			}
		}
		return fmt.Errorf("the webhook was not delivered after the receiver came back (%d attempts)", len(rc.received()))
	})
	hits := rc.received()
	if hits[0].header.Get(plugins.DeliveryHeader) == "" || hits[0].header.Get(plugins.DeliveryHeader) != got.header.Get(plugins.DeliveryHeader) {
		t.Errorf("delivery id changed across retries: %q then %q", hits[0].header.Get(plugins.DeliveryHeader), got.header.Get(plugins.DeliveryHeader))
	}
	if err := plugins.VerifySignature(secret, got.header.Get(plugins.SignatureHeader), got.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if plugins.VerifySignature([]byte("whsec_wrong"), got.header.Get(plugins.SignatureHeader), got.body, time.Now(), 5*time.Minute) == nil {
		t.Fatal("signature verifies with a wrong secret")
	}
	var body map[string]any
	if err := json.Unmarshal(got.body, &body); err != nil || body["event_type"] != "project.created" || body["tenant"] != a ||
		!strings.Contains(body["summary"].(string), "HOOK") || got.header.Get("X-Team") != "infra" {
		t.Fatalf("webhook body %s, headers %v", got.body, got.header)
	}
	waitFor(t, 10*time.Second, func() error {
		r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/deliveries", nil)
		items := r.json(t)["items"].([]any)
		if len(items) != 1 || items[0].(map[string]any)["state"] != "delivered" || items[0].(map[string]any)["attempts"].(float64) < 2 {
			return fmt.Errorf("deliveries: %s", r.Body)
		}
		return nil
	})
	// Delivered once: later retries of nothing send nothing more.
	time.Sleep(500 * time.Millisecond)
	delivered := 0
	for _, h := range rc.received() {
		if h.status == http.StatusNoContent {
			delivered++
		}
	}
	if delivered != 1 {
		t.Fatalf("delivered %d times", delivered)
	}
}

// Without the operator's permission, a webhook to loopback or the cloud
// metadata address is refused, even when the tenant listed the address: the
// event is parked at once with a clear error.
func TestPluginWebhookRefusesPrivateAddresses(t *testing.T) {
	base := pluginServer(t)
	startWorker(t)
	rc := newWebhookReceiver(t)
	rc.up.Store(true)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	a := pluginTenant(t, alice, "ssrf")
	notifier := pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm")
	ids := map[string]string{}
	for name, url := range map[string]string{"loopback": rc.srv.URL + "/x", "metadata": "http://169.254.169.254/latest/meta-data/"} {
		p := alice.wantPluginUpload(201, notifier, map[string]any{"name": name, "hooks": []string{"project.created"},
			"config": map[string]any{"url": url}, "allowed_hosts": []string{"127.0.0.1", "169.254.169.254"}}, a)
		ids[name] = p["id"].(string)
	}
	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("SSRF", 1))
	for name, id := range ids {
		waitFor(t, 20*time.Second, func() error {
			r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id+"/deliveries", nil)
			items := r.json(t)["items"].([]any)
			if len(items) != 1 {
				return fmt.Errorf("%s deliveries: %s", name, r.Body)
			}
			d := items[0].(map[string]any)
			if d["state"] != "failed" || !strings.Contains(d["last_error"].(string), "not public") {
				return fmt.Errorf("%s delivery: %v", name, d)
			}
			return nil
		})
	}
	if n := len(rc.received()); n != 0 {
		t.Fatalf("the loopback receiver got %d requests", n)
	}
	db := testenv.DB(t)
	waitFor(t, 10*time.Second, func() error {
		var rows []struct {
			State     string
			LastError string
		}
		db.Raw(`SELECT d.state, d.last_error FROM public.outbox_deliveries d JOIN public.outbox o ON o.id = d.event_id
			JOIN public.tenants t ON t.id = o.tenant_id WHERE t.slug = ? AND o.type = 'project.created' AND d.consumer = 'notifications'`, a).Scan(&rows)
		if len(rows) != 1 || rows[0].State != "parked" || !strings.Contains(rows[0].LastError, "not public") {
			return fmt.Errorf("outbox delivery: %+v", rows)
		}
		return nil
	})
}

// `promanage plugin run` runs a module locally with the server's sandbox and
// prints the result, duration and logs.
func TestPluginRunCLI(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cfg.json")
	os.WriteFile(cfg, []byte(`{"max_budget_minor": 1000000}`), 0o600)
	event := filepath.Join(dir, "event.json")
	os.WriteFile(event, []byte(`{"key":"WEB","name":"Website","budget":{"amount_minor":2000000,"currency":"EUR"}}`), 0o600)
	module := filepath.Join("..", "..", "examples", "plugins", "budget-guard", "budget-guard.wasm")

	t.Run("Stdin", func(t *testing.T) {
		f, err := os.Open(event)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		old := os.Stdin
		os.Stdin = f
		t.Cleanup(func() { os.Stdin = old })
		var out bytes.Buffer
		m := NewMain(&out, io.Discard)
		if err := m.Run(context.Background(), []string{"plugin", "run", "--hook", "project.validate", "--config", cfg, module}); err != nil {
			t.Fatalf("plugin run: %v\n%s", err, out.String())
		}
		s := out.String()
		if !strings.Contains(s, `"allow":false`) || !strings.Contains(s, "exceeds the cap of 10000.00 EUR") ||
			!strings.Contains(s, "duration:") || !strings.Contains(s, "over cap") {
			t.Fatalf("output:\n%s", s)
		}
	})
	t.Run("JSON", func(t *testing.T) {
		var out bytes.Buffer
		m := NewMain(&out, io.Discard)
		if err := m.Run(context.Background(), []string{"plugin", "run", "--hook", "project.validate", "--config", cfg, "--input", event, "--json", module}); err != nil {
			t.Fatal(err)
		}
		var res struct {
			Result     map[string]any `json:"result"`
			DurationMS float64        `json:"duration_ms"`
			Logs       []string       `json:"logs"`
		}
		if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Result["allow"] != false || res.DurationMS <= 0 || len(res.Logs) == 0 {
			t.Fatalf("json output: %v\n%s", err, out.String())
		}
	})
	t.Run("HostilePluginFails", func(t *testing.T) {
		var out bytes.Buffer
		m := NewMain(&out, io.Discard)
		err := m.Run(context.Background(), []string{"plugin", "run", "--hook", "project.validate", "--input", event,
			filepath.Join("..", "..", "plugins", "testdata", "loop.wasm")})
		if err == nil || !strings.Contains(err.Error(), "timed out") || !strings.Contains(out.String(), "error:") {
			t.Fatalf("looping plugin: %v\n%s", err, out.String())
		}
	})
	t.Run("Usage", func(t *testing.T) {
		m := NewMain(io.Discard, io.Discard)
		if err := m.Run(context.Background(), []string{"plugin", "run", module}); err == nil {
			t.Fatal("no --hook accepted")
		}
	})
}
