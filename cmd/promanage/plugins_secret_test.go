package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/plugins"
)

// pluginSecretKey is the PROMANAGE_SECRET_KEY of the plugin tests: new
// plugins' signing secrets are encrypted with it, and without one the server
// refuses to create plugins.
const pluginSecretKey = "plugin-test-secret-key-0123456789-abcdefgh"

// pluginServer is server with the plugin tests' secret key.
func pluginServer(t *testing.T, extra ...string) string {
	t.Helper()
	return server(t, append([]string{"-secret-key", pluginSecretKey}, extra...)...)
}

// storedSecret is the signing_secret column of a plugin's row.
func storedSecret(t *testing.T, id string) string {
	t.Helper()
	var s []string
	if err := testenv.DB(t).Raw("SELECT signing_secret FROM public.plugins WHERE id = ?", id).Scan(&s).Error; err != nil || len(s) != 1 {
		t.Fatalf("plugin row %s: %v, %v", id, s, err)
	}
	return s[0]
}

// openStored decrypts a stored secret the way the server does.
func openStored(t *testing.T, id, stored string) (string, error) {
	t.Helper()
	box, err := plugins.NewSecretBox([]byte(pluginSecretKey))
	if err != nil {
		t.Fatal(err)
	}
	return box.Open(uuid.MustParse(id), stored)
}

// webhookFrom waits for a delivered webhook carrying X-Plugin: name.
func webhookFrom(t *testing.T, rc *webhookReceiver, name string) receivedWebhook {
	t.Helper()
	var got receivedWebhook
	waitFor(t, 30*time.Second, func() error {
		for _, h := range rc.received() {
			if h.header.Get("X-Plugin") == name && h.status == http.StatusNoContent {
				got = h
				return nil
			}
		}
		return fmt.Errorf("no webhook from %s (%d received)", name, len(rc.received()))
	})
	return got
}

func notifierManifest(name, url string) map[string]any {
	return map[string]any{"name": name, "hooks": []string{"project.created"},
		"config":        map[string]any{"url": url, "headers": map[string]string{"X-Plugin": name}},
		"allowed_hosts": []string{"127.0.0.1"}}
}

func verifies(secret string, h receivedWebhook) error {
	return plugins.VerifySignature([]byte(secret), h.header.Get(plugins.SignatureHeader), h.body, time.Now(), 5*time.Minute)
}

// The signing secret shown at upload is stored encrypted (not the secret,
// bound to its plugin), a webhook the worker delivers still verifies with
// it, and a ciphertext copied onto another plugin's row does not decrypt:
// that plugin's delivery fails with a clear error and nothing is sent.
func TestPluginSecretEncryptedAtRest(t *testing.T) {
	base := pluginServer(t)
	startWorker(t, "-plugin-allow-private-addresses", "true")
	rc := newWebhookReceiver(t)
	rc.up.Store(true)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	a := pluginTenant(t, alice, "seal")
	notifier := pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm")
	first := alice.wantPluginUpload(201, notifier, notifierManifest("first", rc.srv.URL+"/hook"), a)
	second := alice.wantPluginUpload(201, notifier, notifierManifest("second", rc.srv.URL+"/hook"), a)
	firstID, secondID := first["id"].(string), second["id"].(string)
	firstSecret := first["signing_secret"].(string)

	for _, p := range []map[string]any{first, second} {
		id, secret := p["id"].(string), p["signing_secret"].(string)
		stored := storedSecret(t, id)
		if !strings.HasPrefix(secret, "whsec_") || !strings.HasPrefix(stored, "v1:") ||
			strings.Contains(stored, secret) || strings.Contains(stored, strings.TrimPrefix(secret, "whsec_")) {
			t.Fatalf("plugin %s: stored %q for secret %q", p["name"], stored, secret)
		}
		if got, err := openStored(t, id, stored); err != nil || got != secret {
			t.Fatalf("plugin %s: stored value opens to %q, %v", p["name"], got, err)
		}
		got := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+id, nil).json(t)
		if _, ok := got["signing_secret"]; ok {
			t.Fatalf("GET shows the signing secret: %v", got)
		}
	}

	// Move first's ciphertext onto second's row.
	if err := testenv.DB(t).Exec("UPDATE public.plugins SET signing_secret = ? WHERE id = ?", storedSecret(t, firstID), secondID).Error; err != nil {
		t.Fatal(err)
	}
	if _, err := openStored(t, secondID, storedSecret(t, secondID)); err == nil {
		t.Fatal("first's ciphertext opens for second")
	}

	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("SEAL", 1))
	if err := verifies(firstSecret, webhookFrom(t, rc, "first")); err != nil {
		t.Fatalf("first's webhook does not verify with the secret shown at upload: %v", err)
	}
	waitFor(t, 20*time.Second, func() error {
		r := alice.want(200, "GET", "/v1/tenants/"+a+"/plugins/"+secondID+"/deliveries", nil)
		items := r.json(t)["items"].([]any)
		if len(items) != 1 {
			return fmt.Errorf("second's deliveries: %s", r.Body)
		}
		d := items[0].(map[string]any)
		if d["state"] == "delivered" || !strings.Contains(d["last_error"].(string), "signing secret cannot be decrypted") {
			return fmt.Errorf("second's delivery: %v", d)
		}
		return nil
	})
	for _, h := range rc.received() {
		if h.header.Get("X-Plugin") == "second" {
			t.Fatal("a webhook was sent for the plugin whose secret does not decrypt")
		}
	}
}

// Rows written before encryption hold the secret in clear: without a key
// they keep signing (and stay as they are); with a key they are encrypted
// on first use (enabled plugins) or by the worker at start (a disabled one)
// and still sign with the same secret. Without a key, creating
// a plugin is refused with 503 naming PROMANAGE_SECRET_KEY; a new version of
// an existing plugin needs no new secret and is accepted.
func TestPluginSecretLegacyClearText(t *testing.T) {
	keyed := pluginServer(t)
	rc := newWebhookReceiver(t)
	rc.up.Store(true)
	user := testenv.SignUp(t, "alice")
	alice := client{t: t, base: keyed, token: user.Token}
	a := pluginTenant(t, alice, "legacy")
	notifier := pluginFile(t, "examples/plugins/webhook-notifier/webhook-notifier.wasm")
	p := alice.wantPluginUpload(201, notifier, notifierManifest("old", rc.srv.URL+"/hook"), a)
	id := p["id"].(string)
	d := alice.wantPluginUpload(201, notifier, notifierManifest("dormant", rc.srv.URL+"/hook"), a)
	dormantID := d["id"].(string)
	alice.want(200, "PATCH", "/v1/tenants/"+a+"/plugins/"+dormantID, map[string]any{"enabled": false}, "If-Match", d["etag"].(string))
	legacySecret := func(id string) string {
		b := make([]byte, 16)
		rand.Read(b)
		legacy := "whsec_legacy" + hex.EncodeToString(b)
		if err := testenv.DB(t).Exec("UPDATE public.plugins SET signing_secret = ? WHERE id = ?", legacy, id).Error; err != nil {
			t.Fatal(err)
		}
		return legacy
	}
	legacy, dormant := legacySecret(id), legacySecret(dormantID)

	t.Run("WithoutKey", func(t *testing.T) {
		keyless := client{t: t, base: server(t), token: user.Token}
		startWorker(t, "-plugin-allow-private-addresses", "true", "-secret-key", "")
		r := keyless.uploadPlugin(notifier, notifierManifest("new", rc.srv.URL+"/hook"), a)
		if r.Status != 503 || !strings.Contains(string(r.Body), "PROMANAGE_SECRET_KEY") {
			t.Fatalf("creating a plugin without a key: %d %s", r.Status, r.Body)
		}
		keyless.want(404, "GET", "/v1/tenants/"+a+"/plugins/"+uuid.NewString(), nil)
		v := keyless.wantPluginUpload(201, notifier, notifierManifest("old", rc.srv.URL+"/hook"), a)
		if v["version"].(float64) != 2 || v["signing_secret"] != nil {
			t.Fatalf("new version without a key: %v", v)
		}
		keyless.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("CLEAR", 1))
		if err := verifies(legacy, webhookFrom(t, rc, "old")); err != nil {
			t.Fatalf("legacy secret without a key: %v", err)
		}
		if got := storedSecret(t, id); got != legacy {
			t.Fatalf("without a key the legacy row changed to %q", got)
		}
	})

	t.Run("WithKey", func(t *testing.T) {
		before := len(rc.received())
		alice := client{t: t, base: keyed, token: user.Token}
		// Creating the project runs the tenant's plugin set in the keyed
		// server: its first use there encrypts the enabled legacy row.
		alice.want(201, "POST", "/v1/tenants/"+a+"/projects", projectBody("SEALED", 1))
		stored := storedSecret(t, id)
		if !strings.HasPrefix(stored, "v1:") || strings.Contains(stored, legacy) {
			t.Fatalf("legacy row not encrypted on use: %q", stored)
		}
		if opened, err := openStored(t, id, stored); err != nil || opened != legacy {
			t.Fatalf("upgraded row opens to %q, %v", opened, err)
		}
		startWorker(t, "-plugin-allow-private-addresses", "true")
		var got receivedWebhook
		waitFor(t, 30*time.Second, func() error {
			if hits := rc.received(); len(hits) > before && hits[len(hits)-1].status == http.StatusNoContent {
				got = hits[len(hits)-1]
				return nil
			}
			return fmt.Errorf("no new webhook")
		})
		if err := verifies(legacy, got); err != nil {
			t.Fatalf("the upgraded secret does not sign like the legacy one: %v", err)
		}
		// The disabled plugin was not used: the worker's start-up pass
		// encrypts it.
		waitFor(t, 10*time.Second, func() error {
			stored := storedSecret(t, dormantID)
			if opened, err := openStored(t, dormantID, stored); !strings.HasPrefix(stored, "v1:") || err != nil || opened != dormant {
				return fmt.Errorf("disabled legacy row: %q opens to %q, %v", stored, opened, err)
			}
			return nil
		})
	})
}
