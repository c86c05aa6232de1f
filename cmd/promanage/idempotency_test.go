package main

import (
	"bytes"
	"context"
	"encoding/json"
	"mime/multipart"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/internal/testenv"
)

// idemTenant makes a tenant with a project that takes EUR expenses and
// returns the owner, the tenant path and the project path.
func idemTenant(t *testing.T, base string) (client, string, string) {
	t.Helper()
	owner := client{t: t, base: base, token: testenv.SignUp(t, "idem").Token}
	slug := testenv.Slug("idem")
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	pid := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "IDM", "name": "i",
		"budget": map[string]any{"amount_minor": 1_000_000, "currency": "EUR"}}).json(t)["id"].(string)
	return owner, tp, tp + "/projects/" + pid
}

func expense(amount int) map[string]any {
	return map[string]any{"amount_minor": amount, "currency": "EUR", "spent_on": time.Now().UTC().Format("2006-01-02"), "category": "travel"}
}

func countItems(t *testing.T, c client, path string) int {
	t.Helper()
	return len(c.want(200, "GET", path, nil).json(t)["items"].([]any))
}

// A retried POST with the same Idempotency-Key does not record the expense
// twice: the first answer is replayed (with Idempotent-Replayed: true); the
// key with another body is 422 idempotency_key_reused; a refused request
// frees its key. With Redis and with the in-process store.
func TestIdempotencyKeyOnPOST(t *testing.T) {
	for name, extra := range map[string][]string{"Redis": nil, "InProcess": {"-redis-url", ""}} {
		t.Run(name, func(t *testing.T) {
			base := server(t, extra...)
			owner, _, pp := idemTenant(t, base)
			key := uuid.NewString()
			first := owner.want(201, "POST", pp+"/expenses", expense(1250), "Idempotency-Key", key)
			if first.Header.Get("Idempotent-Replayed") != "" {
				t.Fatal("first answer marked as replayed")
			}
			again := owner.want(201, "POST", pp+"/expenses", expense(1250), "Idempotency-Key", key)
			if again.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(again.Body, first.Body) ||
				again.Header.Get("Content-Type") != first.Header.Get("Content-Type") {
				t.Fatalf("retry: %v %s, want the first answer %s replayed", again.Header, again.Body, first.Body)
			}
			if n := countItems(t, owner, pp+"/expenses"); n != 1 {
				t.Fatalf("%d expenses after a retried POST, want 1", n)
			}
			r := owner.want(422, "POST", pp+"/expenses", expense(9999), "Idempotency-Key", key)
			if r.json(t)["code"] != "idempotency_key_reused" {
				t.Fatalf("other body: %s", r.Body)
			}
			r = owner.want(422, "POST", pp+"/tasks", map[string]any{"title": "x"}, "Idempotency-Key", key) // another route
			if r.json(t)["code"] != "idempotency_key_reused" {
				t.Fatalf("other route: %s", r.Body)
			}
			if n := countItems(t, owner, pp+"/expenses"); n != 1 {
				t.Fatalf("%d expenses, want 1", n)
			}
			// A refused request changes nothing and frees its key.
			k2 := uuid.NewString()
			owner.want(422, "POST", pp+"/expenses", expense(0), "Idempotency-Key", k2)
			owner.want(201, "POST", pp+"/expenses", expense(300), "Idempotency-Key", k2)
			// Without a key, every POST runs.
			owner.want(201, "POST", pp+"/expenses", expense(300))
			owner.want(201, "POST", pp+"/expenses", expense(300))
			if n := countItems(t, owner, pp+"/expenses"); n != 4 {
				t.Fatalf("%d expenses, want 4", n)
			}
		})
	}
}

// Keys are scoped per identity: another member sending the same key and
// body gets their own request run, never the first identity's answer.
func TestIdempotencyKeyIsPerIdentity(t *testing.T) {
	base := server(t)
	owner, tp, pp := idemTenant(t, base)
	mateU := testenv.SignUp(t, "idem-mate")
	mate := client{t: t, base: base, token: mateU.Token}
	mate.want(200, "GET", "/v1/me", nil)
	owner.want(201, "PUT", tp+"/members/"+mateU.ID.String(), map[string]string{"role": "member"})
	key := uuid.NewString()
	a := owner.want(201, "POST", pp+"/expenses", expense(500), "Idempotency-Key", key)
	b := mate.want(201, "POST", pp+"/expenses", expense(500), "Idempotency-Key", key)
	if b.Header.Get("Idempotent-Replayed") != "" || b.json(t)["id"] == a.json(t)["id"] {
		t.Fatalf("another identity got the first one's stored answer: %s", b.Body)
	}
	if n := countItems(t, owner, pp+"/expenses"); n != 2 {
		t.Fatalf("%d expenses, want 2", n)
	}
}

// Concurrent requests with the same key never both run: one records the
// expense, the others replay its answer or are told to retry (409).
func TestIdempotencyKeyConcurrent(t *testing.T) {
	base := server(t)
	owner, _, pp := idemTenant(t, base)
	key := uuid.NewString()
	const n = 8
	var wg sync.WaitGroup
	results := make([]response, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = owner.do("POST", pp+"/expenses", expense(777), "Idempotency-Key", key)
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, r := range results {
		switch r.Status {
		case 201:
			ids[r.json(t)["id"].(string)] = true
		case 409:
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("409 without Retry-After: %s", r.Body)
			}
		default:
			t.Errorf("status %d: %s", r.Status, r.Body)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("%d different expenses answered, want 1", len(ids))
	}
	if got := countItems(t, owner, pp+"/expenses"); got != 1 {
		t.Fatalf("%d expenses recorded, want 1", got)
	}
}

// A streamed upload is fingerprinted while it is read: a retry of the same
// file (with the new multipart boundary a client picks for every request)
// replays the first answer without storing the file again; another file
// under the key is 422.
func TestIdempotencyKeyOnUpload(t *testing.T) {
	base := server(t, "-blob-url", "mem://")
	owner, tp, pp := idemTenant(t, base)
	key := uuid.NewString()
	content := bytes.Repeat([]byte("quarterly report line\n"), 5000)
	up := func(status int, body []byte) response {
		t.Helper()
		ct, b := multipartBody(t, formPart{name: "title", body: []byte("Report")}, fileOf("report.txt", body))
		r := owner.raw("POST", pp+"/documents", bytes.NewReader(b), ct, "Idempotency-Key", key)
		if r.Status != status {
			t.Fatalf("upload: %d, want %d: %s", r.Status, status, r.Body)
		}
		return r
	}
	first := up(201, content)
	again := up(201, content)
	if again.Header.Get("Idempotent-Replayed") != "true" || again.json(t)["id"] != first.json(t)["id"] {
		t.Fatalf("retried upload: %s, want %s replayed", again.Body, first.Body)
	}
	if r := up(422, append(bytes.Clone(content), '!')); r.json(t)["code"] != "idempotency_key_reused" {
		t.Fatalf("other file: %s", r.Body)
	}
	if n := countItems(t, owner, pp+"/documents"); n != 1 {
		t.Fatalf("%d documents, want 1", n)
	}
	r := owner.want(200, "GET", tp+"/documents/"+first.json(t)["id"].(string)+"/versions", nil)
	if n := len(r.json(t)["items"].([]any)); n != 1 {
		t.Fatalf("%d versions, want 1", n)
	}
}

// Bounds and failures: an over-long key is 422 naming the header; with
// the store down a keyed POST is 503 (it cannot be made safe to retry)
// while an unkeyed one still runs.
func TestIdempotencyKeyLimits(t *testing.T) {
	base := server(t)
	owner, _, pp := idemTenant(t, base)
	r := owner.want(422, "POST", pp+"/expenses", expense(1), "Idempotency-Key", strings.Repeat("k", 256))
	if errs := r.json(t)["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["field"] != "Idempotency-Key" {
		t.Fatalf("long key: %s", r.Body)
	}
	owner.want(201, "POST", pp+"/expenses", expense(1), "Idempotency-Key", strings.Repeat("k", 255))

	down := server(t, "-redis-url", "redis://127.0.0.1:1/0")
	o2, _, pp2 := idemTenant(t, down)
	r = o2.want(503, "POST", pp2+"/expenses", expense(1), "Idempotency-Key", uuid.NewString())
	if r.json(t)["code"] != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("store down: %v %s", r.Header, r.Body)
	}
	o2.want(201, "POST", pp2+"/expenses", expense(1))
	if n := countItems(t, o2, pp2+"/expenses"); n != 1 {
		t.Fatalf("%d expenses, want 1", n)
	}
}

// An answer that carries a secret shown once (a plugin's signing secret,
// marked no-store) is never copied into the idempotency store: a retry with
// the key does not run again and does not show the secret; it answers 409
// pointing at the plugin.
func TestIdempotencyKeyNeverStoresSecrets(t *testing.T) {
	base := pluginServer(t)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "idem-plugin").Token}
	slug := pluginTenant(t, alice, "idemplug")
	notifier := pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm")
	key := uuid.NewString()
	send := func() response {
		t.Helper()
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("module", "plugin.wasm")
		fw.Write(notifier)
		m, _ := json.Marshal(notifierManifest("idem", "https://example.com/hook"))
		mw.WriteField("manifest", string(m))
		mw.Close()
		return alice.raw("POST", "/v1/tenants/"+slug+"/plugins", &buf, mw.FormDataContentType(), "Idempotency-Key", key)
	}
	first := send()
	if first.Status != 201 || first.json(t)["signing_secret"] == nil {
		t.Fatalf("upload: %d %s", first.Status, first.Body)
	}
	secret := first.json(t)["signing_secret"].(string)
	again := send()
	if again.Status != 409 || again.Header.Get("Location") != first.Header.Get("Location") || bytes.Contains(again.Body, []byte(secret)) {
		t.Fatalf("retry: %d %v %s", again.Status, again.Header, again.Body)
	}
	if n := countItems(t, alice, "/v1/tenants/"+slug+"/plugins"); n != 1 {
		t.Fatalf("%d plugins, want 1", n)
	}
	keys, err := redisClient(t).Keys(context.Background(), "pm:idem:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		v, _ := redisClient(t).Get(context.Background(), k).Result()
		if strings.Contains(v, secret) {
			t.Fatalf("the signing secret is in the idempotency store (%s)", k)
		}
	}
}

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}
