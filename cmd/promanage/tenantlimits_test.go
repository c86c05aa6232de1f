package main

import (
	"strings"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// Slugs that name PostgreSQL's schemas or the platform's own hosts and
// paths are refused with 422 naming the field; an ordinary slug that merely
// contains such a word is fine.
func TestReservedSlugs(t *testing.T) {
	base := server(t)
	u := client{t: t, base: base, token: testenv.SignUp(t, "reserved").Token}
	for _, slug := range []string{"public", "pg-catalog", "pg-toast", "pg-anything", "admin", "api", "www", "kratos", "docs", "metrics"} {
		t.Run(slug, func(t *testing.T) {
			c := u
			c.t = t
			r := c.want(422, "POST", "/v1/tenants", map[string]string{"slug": slug})
			body := r.json(t)
			errs, _ := body["errors"].([]any)
			if body["code"] != "invalid" || len(errs) != 1 || errs[0].(map[string]any)["field"] != "slug" ||
				!strings.Contains(errs[0].(map[string]any)["message"].(string), "reserved") {
				t.Fatalf("body %s", r.Body)
			}
		})
	}
	u.want(201, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("api-team")})
}

// One user owns at most -tenants-per-user tenants; a soft-deleted tenant
// counts until it is purged; another user is not affected.
func TestTenantsPerUser(t *testing.T) {
	base := server(t, "-tenants-per-user", "2")
	alice := client{t: t, base: base, token: testenv.SignUp(t, "cap-alice").Token}
	bob := client{t: t, base: base, token: testenv.SignUp(t, "cap-bob").Token}
	first := testenv.Slug("cap")
	alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": first})
	alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("cap")})
	r := alice.want(403, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("cap")})
	if r.json(t)["code"] != "forbidden" || !strings.Contains(r.json(t)["detail"].(string), "2 tenants") {
		t.Fatalf("body %s", r.Body)
	}
	alice.want(204, "DELETE", "/v1/tenants/"+first, nil)
	alice.want(403, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("cap")})
	bob.want(201, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("cap")})
	r = alice.want(200, "GET", "/v1/tenants", nil)
	if n := len(r.json(t)["items"].([]any)); n != 1 {
		t.Fatalf("alice sees %d live tenants, want 1: %s", n, r.Body)
	}
}

// Tenant creation is rate limited per identity and per client address
// (behind a trusted proxy, the address X-Forwarded-For gives): every
// attempt counts, including those answering 409, so probing which slugs
// are taken is slow. A taken slug answers the same 409 whether its tenant
// is live or soft-deleted.
func TestTenantCreationRateLimit(t *testing.T) {
	base := server(t, "-rate-limit-tenant-create", "3", "-trusted-proxies", "127.0.0.1/32")
	addrs := distinctAddrs(2)
	shared, other := addrs[0], addrs[1]
	as := func(name string) client { return client{t: t, base: base, token: testenv.SignUp(t, name).Token} }
	alice, bob, carol := as("rl-alice"), as("rl-bob"), as("rl-carol")

	live, deleted := testenv.Slug("rl-live"), testenv.Slug("rl-gone")
	alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": live}, "X-Forwarded-For", shared)
	alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": deleted}, "X-Forwarded-For", shared)
	alice.want(204, "DELETE", "/v1/tenants/"+deleted, nil, "X-Forwarded-For", other)
	// Bob probes from the same address: both taken slugs answer alike.
	rLive := bob.want(409, "POST", "/v1/tenants", map[string]string{"slug": live}, "X-Forwarded-For", shared)
	// The address has used its 3 attempts: Bob's next probe is refused
	// before the registry is asked.
	r := bob.want(429, "POST", "/v1/tenants", map[string]string{"slug": deleted}, "X-Forwarded-For", shared)
	if r.Header.Get("Retry-After") == "" || r.json(t)["code"] != "rate_limited" {
		t.Fatalf("over the limit: %v %s", r.Header, r.Body)
	}
	// From another address Bob may go on, until his own limit.
	rGone := bob.want(409, "POST", "/v1/tenants", map[string]string{"slug": deleted}, "X-Forwarded-For", other)
	if a, b := rLive.json(t)["detail"].(string), rGone.json(t)["detail"].(string); strings.Replace(a, live, "X", 1) != strings.Replace(b, deleted, "X", 1) || strings.Contains(b, "delet") {
		t.Fatalf("409s differ between a live and a deleted tenant's slug: %q vs %q", a, b)
	}
	// Bob has made 3 attempts: his own limit holds from any address.
	bob.want(429, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("rl")}, "X-Forwarded-For", distinctAddrs(1)[0])
	// Carol, from an untouched address, is not affected by either.
	carol.want(201, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("rl")}, "X-Forwarded-For", distinctAddrs(1)[0])
}
