package main

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// A client address that keeps presenting invalid credentials is cut off
// with 429 (without a Kratos call per attempt), while sessions already
// verified keep working; behind a trusted proxy the address comes from
// X-Forwarded-For, so one attacker does not block everyone behind the proxy.
func TestFailedAuthenticationsAreLimitedPerAddress(t *testing.T) {
	base := server(t, "-rate-limit-auth-failures", "3", "-trusted-proxies", "127.0.0.1/32")
	good := testenv.SignUp(t, "authlimit")
	addrs := distinctAddrs(2)
	attacker, bystander := addrs[0], addrs[1]
	as := func(token string) client { return client{t: t, base: base, token: token} }

	// A verified session, cached before the attack.
	as(good.Token).want(200, "GET", "/v1/me", nil, "X-Forwarded-For", attacker)

	for i := range 3 {
		as("").want(401, "GET", "/v1/me", nil, "X-Forwarded-For", attacker, "Authorization", fmt.Sprintf("Bearer ory_st_bogus%d", i))
	}
	r := as("").want(429, "GET", "/v1/me", nil, "X-Forwarded-For", attacker, "Authorization", "Bearer ory_st_bogus3")
	if r.Header.Get("Retry-After") == "" || r.json(t)["code"] != "rate_limited" {
		t.Fatalf("over the limit: %v %s", r.Header, r.Body)
	}
	as("").want(429, "GET", "/v1/me", nil, "X-Forwarded-For", attacker, "Authorization", "Bearer ory_st_bogus4")

	// The cached session from the same address still works.
	as(good.Token).want(200, "GET", "/v1/me", nil, "X-Forwarded-For", attacker)
	// Another client behind the same proxy is not affected.
	as("").want(401, "GET", "/v1/me", nil, "X-Forwarded-For", bystander, "Authorization", "Bearer ory_st_bogus")
	other := testenv.SignUp(t, "authlimit-bystander")
	as(other.Token).want(200, "GET", "/v1/me", nil, "X-Forwarded-For", bystander)
}

// Behind a proxy that appends the address it saw, the left part of
// X-Forwarded-For is whatever the client sent: rotating forged addresses
// there neither escapes the per-address limit nor blocks the forged
// (victim's) address.
func TestFailedAuthenticationsLimitIgnoresForgedForwardedFor(t *testing.T) {
	base := server(t, "-rate-limit-auth-failures", "3", "-trusted-proxies", "127.0.0.1/32")
	addrs := distinctAddrs(8)
	attacker, victim := addrs[0], addrs[1]
	next := 2
	rnd := func() string { next++; return addrs[next-1] }
	c := client{t: t, base: base}
	// The proxy (127.0.0.1, trusted) appended the attacker's real address;
	// the victim's address on the left is forged.
	xff := func(int) string { return victim + ", " + rnd() + "," + attacker }
	for i := range 3 {
		c.want(401, "GET", "/v1/me", nil, "X-Forwarded-For", xff(i), "Authorization", fmt.Sprintf("Bearer ory_st_forged%d", i))
	}
	c.want(429, "GET", "/v1/me", nil, "X-Forwarded-For", xff(3), "Authorization", "Bearer ory_st_forged3")
	// The victim, whose address the attacker forged, is not blocked.
	c.want(401, "GET", "/v1/me", nil, "X-Forwarded-For", victim, "Authorization", "Bearer ory_st_victim")
	// Two trusted hops: the client is the right-most untrusted address.
	c.want(429, "GET", "/v1/me", nil, "X-Forwarded-For", rnd()+", "+attacker+", 127.0.0.1", "Authorization", "Bearer ory_st_forged4")
}

// distinctAddrs returns n random IPv6 addresses in n different /64s (the
// unit failed authentications are counted in), unused by earlier runs
// sharing the Redis counters.
func distinctAddrs(n int) []string {
	base := rand.Uint32() & 0xffff
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("2001:db8:%x:%x::%x", base, i, rand.Uint32()&0xffff)
	}
	return out
}
