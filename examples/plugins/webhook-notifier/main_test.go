package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/promanage/promanage/plugins"
)

// TestWebhookNotifierWasm loads the committed webhook-notifier.wasm through
// the host, turns an event into a delivery and sends it, signed, to a local
// receiver that verifies the signature.
func TestWebhookNotifierWasm(t *testing.T) {
	wasm, err := os.ReadFile("webhook-notifier.wasm")
	if err != nil {
		t.Fatalf("read module (build with examples/plugins/build.sh): %v", err)
	}
	secret := []byte("tenant-webhook-secret")
	type received struct {
		header http.Header
		body   []byte
	}
	got := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := plugins.VerifySignature(secret, r.Header.Get(plugins.SignatureHeader), b, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		got <- received{r.Header.Clone(), b}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)

	ctx := context.Background()
	h, err := plugins.NewHost(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	m := plugins.Manifest{
		Name: "webhook-notifier", Hooks: []string{"project.created", "budget.threshold_crossed"},
		Config:       json.RawMessage(`{"url":"` + srv.URL + `/hook","headers":{"X-Team":"infra"}}`),
		AllowedHosts: []string{u.Hostname()},
	}
	p, err := h.Load(ctx, "webhook-notifier-v1", wasm, m)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	in, _ := plugins.NotificationInput{Hook: "budget.threshold_crossed", Tenant: "acme", Config: m.Config, Event: plugins.Event{
		ID: "01J0EVENT", Type: "budget.threshold_crossed", Tenant: "acme", OccurredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Data: json.RawMessage(`{"project":{"key":"WEB","name":"Website"},"percent":90}`),
	}}.Encode()
	inv, err := h.Call(ctx, p, "acme", "budget.threshold_crossed", in)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	res, err := plugins.DecodeNotificationResult(inv.Output)
	if err != nil {
		t.Fatalf("decode %s: %v", inv.Output, err)
	}
	if len(res.Deliveries) != 1 || res.Deliveries[0].URL != srv.URL+"/hook" {
		t.Fatalf("deliveries = %+v, want one to %s/hook", res.Deliveries, srv.URL)
	}
	if len(inv.Logs) != 1 || !strings.Contains(inv.Logs[0], "budget.threshold_crossed -> ") {
		t.Errorf("logs = %q", inv.Logs)
	}

	d := plugins.NewDeliverer(&plugins.DelivererOptions{AllowPrivate: true}) // the receiver is on loopback
	status, err := d.Deliver(ctx, res.Deliveries[0], m.AllowedHosts, secret, "dlv-1")
	if err != nil || status != http.StatusNoContent {
		t.Fatalf("Deliver = %d, %v", status, err)
	}
	r := <-got
	var body struct {
		EventID string `json:"event_id"`
		Summary string `json:"summary"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if body.EventID != "01J0EVENT" || body.Summary != "[acme] budget 90% used: WEB Website" {
		t.Errorf("body = %+v", body)
	}
	if r.header.Get("X-Team") != "infra" || r.header.Get(plugins.DeliveryHeader) != "dlv-1" {
		t.Errorf("headers = %v", r.header)
	}

	// Without AllowPrivate (production), the same delivery is refused.
	if _, err := plugins.NewDeliverer(nil).Deliver(ctx, res.Deliveries[0], m.AllowedHosts, secret, "dlv-2"); err == nil || plugins.Retryable(err) {
		t.Errorf("delivery to loopback in production mode = %v, want a permanent refusal", err)
	}
}
