package main

import (
	"strings"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// Every answer carries nosniff, a Referrer-Policy, no framing and a strict
// CSP (default-src 'none'; the docs page its own); HSTS only when the
// client came over HTTPS, which only a trusted proxy may say.
func TestSecurityHeaders(t *testing.T) {
	base := server(t, "-trusted-proxies", "127.0.0.1/32", "-blob-url", "mem://")
	u := client{t: t, base: base, token: testenv.SignUp(t, "headers").Token}
	slug := testenv.Slug("hdr")
	tp := "/v1/tenants/" + slug
	u.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	pid := u.want(201, "POST", tp+"/projects", map[string]any{"key": "HDR", "name": "h"}).json(t)["id"].(string)
	doc := u.upload(201, tp+"/projects/"+pid+"/documents", fileOf("page.html", []byte("<html><script>alert(1)</script></html>"))).json(t)["id"].(string)

	anon := client{t: t, base: base}
	cases := []struct {
		name string
		r    response
		csp  string
	}{
		{"JSON", u.want(200, "GET", tp, nil), "default-src 'none'"},
		{"Problem", anon.want(401, "GET", "/v1/me", nil), "default-src 'none'"},
		{"UnknownRoute", anon.want(404, "GET", "/nowhere", nil), "default-src 'none'"},
		{"Health", anon.want(200, "GET", "/healthz", nil), "default-src 'none'"},
		{"Download", u.want(200, "GET", tp+"/documents/"+doc+"/content", nil), "sandbox"},
		{"Docs", anon.want(200, "GET", "/docs", nil), "script-src 'self';"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.r.Header
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Frame-Options") != "DENY" {
				t.Errorf("headers: %v", h)
			}
			csp := h.Get("Content-Security-Policy")
			if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, tc.csp) {
				t.Errorf("CSP %q, want default-src 'none', frame-ancestors 'none' and %s", csp, tc.csp)
			}
			// Only the docs page (Redoc) runs script, and only its own.
			script := ""
			for _, d := range strings.Split(csp, ";") {
				if d = strings.TrimSpace(d); strings.HasPrefix(d, "script-src") {
					script = d
				}
			}
			if (script != "" && (tc.name != "Docs" || script != "script-src 'self'")) || strings.Contains(csp, "*") || strings.Contains(csp, "http") {
				t.Errorf("CSP %q allows script beyond the docs page's own, or any source", csp)
			}
			if h.Get("Strict-Transport-Security") != "" {
				t.Errorf("HSTS over plain HTTP: %q", h.Get("Strict-Transport-Security"))
			}
		})
	}
	t.Run("HSTSBehindTrustedProxy", func(t *testing.T) {
		r := anon.want(200, "GET", "/healthz", nil, "X-Forwarded-Proto", "https")
		if hsts := r.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(hsts, "max-age=") || !strings.Contains(hsts, "includeSubDomains") {
			t.Fatalf("HSTS %q", hsts)
		}
	})
	t.Run("NoHSTSFromUntrustedPeer", func(t *testing.T) {
		plain := server(t)
		r := (client{t: t, base: plain}).want(200, "GET", "/healthz", nil, "X-Forwarded-Proto", "https")
		if hsts := r.Header.Get("Strict-Transport-Security"); hsts != "" {
			t.Fatalf("HSTS from a forged X-Forwarded-Proto: %q", hsts)
		}
	})
}
