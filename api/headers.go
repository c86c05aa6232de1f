package api

import (
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Content-Security-Policy values. Every answer of the API gets apiCSP: JSON,
// problem+json and document downloads never need to load, run or frame
// anything, and "sandbox" keeps a downloaded HTML or SVG file that a
// browser renders from running script or reaching our origin's cookies.
//
// docsCSP is the one place to adjust when /docs changes. The page is Redoc
// served from this binary (api/docs): its script from 'self' only, inline
// styles (Redoc injects them at run time, no nonce support in 2.x), its
// search index in a blob: worker, and fetches of /openapi.json. Never a CDN.
const (
	apiCSP  = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
	docsCSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
	// docsPath is the route whose answer gets docsCSP.
	docsPath = "/docs"
	// hstsValue: browsers that reached us over HTTPS keep doing so for a
	// year, subdomains included.
	hstsValue = "max-age=31536000; includeSubDomains"
)

// securityHeaders sets the headers every answer carries once the rest of
// the chain (handler and error handler) has run, so error answers
// (problem+json, 404 of unknown routes) get them too and a handler cannot
// weaken them by accident: the policy lives here, in one place.
func (s *Server) securityHeaders(c *fiber.Ctx) error {
	err := c.Next()
	h := &c.Response().Header
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if strings.TrimSuffix(c.Path(), "/") == docsPath {
		h.Set(fiber.HeaderContentSecurityPolicy, docsCSP)
	} else {
		h.Set(fiber.HeaderContentSecurityPolicy, apiCSP)
	}
	if s.servedOverHTTPS(c) {
		h.Set(fiber.HeaderStrictTransportSecurity, hstsValue)
	}
	return err
}

// servedOverHTTPS reports whether the client reached us over HTTPS: our own
// TLS, or a trusted proxy (PROMANAGE_TRUSTED_PROXIES) saying so in
// X-Forwarded-Proto. Anyone else's X-Forwarded-Proto is ignored.
func (s *Server) servedOverHTTPS(c *fiber.Ctx) bool {
	if c.Context().IsTLS() {
		return true
	}
	peer, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok || !s.trustedProxy(peer) {
		return false
	}
	proto := c.Get(fiber.HeaderXForwardedProto)
	// A chain of proxies may append: the first value is the edge's. (A
	// client forging "https" through a proxy that keeps it gains nothing:
	// browsers ignore HSTS received over plain HTTP, RFC 6797 8.1.)
	first, _, _ := strings.Cut(proto, ",")
	return strings.EqualFold(strings.TrimSpace(first), "https")
}
