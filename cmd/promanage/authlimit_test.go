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
	attacker := fmt.Sprintf("2001:db8:%x::%x", rand.Uint32()&0xffff, rand.Uint32()&0xffff)
	bystander := fmt.Sprintf("2001:db8:%x::%x", rand.Uint32()&0xffff, rand.Uint32()&0xffff)
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
