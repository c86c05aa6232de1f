package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var secret = []byte("s3cret")

func TestDeliverRefusesNonPublicAddresses(t *testing.T) {
	d := NewDeliverer(nil)
	tests := []struct {
		name    string
		url     string
		allowed []string
	}{
		{"Loopback", "http://127.0.0.1:9/hook", []string{"127.0.0.1"}},
		{"CloudMetadata", "http://169.254.169.254/latest/meta-data/", []string{"169.254.169.254"}},
		{"Private", "http://10.0.0.7/hook", []string{"10.0.0.7"}},
		{"IPv6Loopback", "http://[::1]:9/hook", []string{"::1"}},
		// A name is checked on the address it resolves to, at dial time.
		{"NameResolvingToLoopback", "http://localhost:9/hook", []string{"localhost"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Deliver(context.Background(), Delivery{URL: tt.url, Body: json.RawMessage(`{}`)}, tt.allowed, secret, "d1")
			if !errors.Is(err, ErrAddressRefused) {
				t.Fatalf("Deliver(%s) = %v, want ErrAddressRefused", tt.url, err)
			}
			if Retryable(err) {
				t.Errorf("refusal is retryable: %v", err)
			}
		})
	}
}

func TestDeliverChecksAllowedHosts(t *testing.T) {
	d := NewDeliverer(nil)
	for _, u := range []string{"https://evil.example.net/x", "https://example.com.evil.net/x", "https://example.com/x"} {
		_, err := d.Deliver(context.Background(), Delivery{URL: u}, []string{"*.example.com"}, secret, "d1")
		if !errors.Is(err, ErrHostNotAllowed) || Retryable(err) {
			t.Errorf("Deliver(%s) = %v, want permanent ErrHostNotAllowed", u, err)
		}
	}
	if !hostAllowed("hooks.eu.example.com", []string{"*.example.com"}) || !hostAllowed("API.example.com.", []string{"api.example.com"}) {
		t.Error("allowed host not matched")
	}
	for _, bad := range []Delivery{
		{URL: "ftp://a.example.com/"},
		{URL: "https://a.example.com/", Method: "DELETE"},
		{URL: "https://a.example.com/", Headers: map[string]string{"Host": "internal"}},
		{URL: "https://a.example.com/", Headers: map[string]string{"ProManage-Signature": "forged"}},
		{URL: "https://a.example.com/", Headers: map[string]string{"X-A": "b\r\nX-Injected: 1"}},
	} {
		if _, err := d.Deliver(context.Background(), bad, []string{"a.example.com"}, secret, "d1"); !errors.Is(err, ErrInvalidDelivery) {
			t.Errorf("Deliver(%+v) = %v, want ErrInvalidDelivery", bad, err)
		}
	}
}

func TestDeliverSignsAndClassifies(t *testing.T) {
	var redirectTargetHits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/ok":
			if err := VerifySignature(secret, r.Header.Get(SignatureHeader), body, time.Now(), time.Minute); err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			if r.Header.Get(DeliveryHeader) != "dlv-42" || r.Header.Get("Content-Type") != "application/json" {
				http.Error(w, "headers", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		case "/text":
			if string(body) != "hello" || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
				http.Error(w, "body", http.StatusBadRequest)
				return
			}
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slowdown":
			w.WriteHeader(http.StatusTooManyRequests)
		case "/gone":
			w.WriteHeader(http.StatusGone)
		case "/redirect":
			http.Redirect(w, r, "/target", http.StatusFound)
		case "/target":
			redirectTargetHits.Add(1)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	allowed := []string{u.Hostname()}
	d := NewDeliverer(&DelivererOptions{AllowPrivate: true})

	tests := []struct {
		path      string
		body      string
		status    int
		wantErr   bool
		retryable bool
	}{
		{"/ok", `{"event":"project.created"}`, 202, false, false},
		{"/text", `"hello"`, 200, false, false},
		{"/down", `{}`, 503, true, true},
		{"/slowdown", `{}`, 429, true, true},
		{"/gone", `{}`, 410, true, false},
		{"/redirect", `{}`, 302, true, false},
	}
	for _, tt := range tests {
		status, err := d.Deliver(context.Background(), Delivery{URL: srv.URL + tt.path, Body: json.RawMessage(tt.body)}, allowed, secret, "dlv-42")
		if status != tt.status || (err != nil) != tt.wantErr || Retryable(err) != tt.retryable {
			t.Errorf("%s: status %d err %v (retryable %v); want %d, error %v, retryable %v", tt.path, status, err, Retryable(err), tt.status, tt.wantErr, tt.retryable)
		}
	}
	if n := redirectTargetHits.Load(); n != 0 {
		t.Errorf("redirect was followed %d times", n)
	}
	// Network failure: retryable.
	srv.Close()
	if _, err := d.Deliver(context.Background(), Delivery{URL: srv.URL + "/ok"}, allowed, secret, "d"); !Retryable(err) {
		t.Errorf("closed server: %v, want a retryable error", err)
	}
	// No secret: refused rather than sent unsigned.
	if _, err := d.Deliver(context.Background(), Delivery{URL: srv.URL + "/ok"}, allowed, nil, "d"); !errors.Is(err, ErrInvalidDelivery) {
		t.Errorf("no secret: %v, want ErrInvalidDelivery", err)
	}
}

func TestVerifySignature(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	body := []byte(`{"a":1}`)
	h := Sign(secret, body, now)
	if !strings.HasPrefix(h, "t=1700000000,v1=") {
		t.Fatalf("header %q", h)
	}
	if err := VerifySignature(secret, h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Errorf("valid signature: %v", err)
	}
	for name, check := range map[string]error{
		"TamperedBody": VerifySignature(secret, h, []byte(`{"a":2}`), now, time.Minute),
		"WrongSecret":  VerifySignature([]byte("other"), h, body, now, time.Minute),
		"Replayed":     VerifySignature(secret, h, body, now.Add(time.Hour), 5*time.Minute),
		"Malformed":    VerifySignature(secret, "v1=abc", body, now, time.Minute),
	} {
		if check == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestPublicAddr(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1", "::1", "::", "fe80::1", "fd00::1", "fc00::1",
		"ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1", "2001:db8::1",
		"::7f00:1", "::a9fe:a9fe", "::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe"} {
		if publicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s counted as public", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"} {
		if !publicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s counted as non-public", s)
		}
	}
}

func TestDecodeResults(t *testing.T) {
	vr, err := DecodeValidationResult([]byte(`{"allow":true,"patch":{"name":"X"}}`))
	if err != nil || !vr.Allow || string(vr.Patch) != `{"name":"X"}` {
		t.Errorf("patch result = %+v, %v", vr, err)
	}
	vr, err = DecodeValidationResult([]byte(`{"allow":false}`))
	if err != nil || vr.Allow || vr.Message == "" {
		t.Errorf("bare rejection = %+v, %v; want a default message", vr, err)
	}
	for out, want := range map[string]error{
		`{"message":"no allow"}`:        ErrInvalidOutput,
		`{"allow":true,"patch":[1]}`:    ErrInvalidOutput,
		`[]`:                            ErrInvalidOutput,
		`{"error":"config is missing"}`: ErrPluginFailed,
	} {
		if _, err := DecodeValidationResult([]byte(out)); !errors.Is(err, want) {
			t.Errorf("DecodeValidationResult(%s) = %v, want %v", out, err, want)
		}
	}
	long := `{"allow":false,"message":"` + strings.Repeat("é", 2000) + `"}`
	if vr, err := DecodeValidationResult([]byte(long)); err != nil || len(vr.Message) > maxMessageBytes+4 {
		t.Errorf("long message not clipped: %d bytes, %v", len(vr.Message), err)
	}

	nr, err := DecodeNotificationResult([]byte(`{"deliveries":[{"url":"https://a.example.com/h","method":"put","body":"hi"}]}`))
	if err != nil || len(nr.Deliveries) != 1 || nr.Deliveries[0].Method != "PUT" {
		t.Errorf("notification = %+v, %v", nr, err)
	}
	many := `{"deliveries":[` + strings.TrimSuffix(strings.Repeat(`{"url":"https://a.example.com"},`, 11), ",") + `]}`
	for _, out := range []string{many, `{"deliveries":[{"url":"/relative"}]}`, `{"deliveries":{}}`} {
		if _, err := DecodeNotificationResult([]byte(out)); !errors.Is(err, ErrInvalidOutput) {
			t.Errorf("DecodeNotificationResult(%.60s) = %v, want ErrInvalidOutput", out, err)
		}
	}
}
