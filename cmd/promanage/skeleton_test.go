package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

func TestPlatformEndpoints(t *testing.T) {
	base := server(t)
	anon := client{t: t, base: base}
	anon.want(200, "GET", "/healthz", nil)
	r := anon.want(200, "GET", "/readyz", nil)
	if checks := r.json(t)["checks"].(map[string]any); checks["postgres"] != "ok" || checks["kratos"] != "ok" || checks["redis"] != "ok" {
		t.Fatalf("readyz checks: %v", checks)
	}
	// Metrics are on their own listener (metrics_test.go), never the public port.
	anon.want(404, "GET", "/metrics", nil)
	r = anon.want(200, "GET", "/openapi.json", nil)
	if r.json(t)["openapi"] != "3.1.0" {
		t.Fatal("openapi.json is not OpenAPI 3.1")
	}
	// The reference page itself: TestDocsPage (and api's browser test).
	if r.Header.Get("X-Request-ID") == "" {
		t.Fatal("no X-Request-ID")
	}
}

func TestAuthentication(t *testing.T) {
	base := server(t)
	u := testenv.SignUp(t, "auth")
	cases := []struct {
		name    string
		headers []string
		want    int
	}{
		{"NoCredentials", nil, 401},
		{"ForgedToken", []string{"Authorization", "Bearer ory_st_forged0000000000000000000000"}, 401},
		{"WrongScheme", []string{"Authorization", "Basic " + u.Token}, 401},
		{"Bearer", []string{"Authorization", "Bearer " + u.Token}, 200},
		{"XSessionToken", []string{"X-Session-Token", u.Token}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := client{t: t, base: base}
			r := c.want(tc.want, "GET", "/v1/me", nil, tc.headers...)
			if tc.want == 401 {
				if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("content-type %q", ct)
				}
				if r.json(t)["code"] != "unauthorized" {
					t.Fatalf("body %s", r.Body)
				}
			} else if got := r.json(t)["user"].(map[string]any)["email"]; got != u.Email {
				t.Fatalf("me.email = %v, want %s", got, u.Email)
			}
		})
	}
	t.Run("CookieNeedsSameOrigin", func(t *testing.T) {
		c := client{t: t, base: base}
		// A cookie is accepted for reads, but a cross-site unsafe request is refused.
		c.want(200, "GET", "/v1/me", nil, "Cookie", "ory_kratos_session=x; other=1", "Authorization", "Bearer "+u.Token)
		c.want(403, "POST", "/v1/tenants", map[string]string{"slug": testenv.Slug("csrf")}, "Cookie", "ory_kratos_session=abc", "Origin", "https://evil.example")
	})
	t.Run("RevokedSessionOnSensitiveRoute", func(t *testing.T) {
		v := testenv.SignUp(t, "revoked")
		c := client{t: t, base: base, token: v.Token}
		slug := testenv.Slug("rev")
		c.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
		testenv.Logout(t, v.Token)
		// Member changes bypass the session cache: a revoked session is refused at once.
		c.want(401, "PUT", "/v1/tenants/"+slug+"/members/"+v.ID.String(), map[string]string{"role": "viewer"})
	})
}

// The walking skeleton as a user sees it: two organisations, projects,
// roles, and no way across the tenant boundary.
func TestTenantsProjectsAndIsolation(t *testing.T) {
	base := server(t)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	bob := client{t: t, base: base, token: testenv.SignUp(t, "bob").Token}
	carolUser := testenv.SignUp(t, "carol")
	carol := client{t: t, base: base, token: carolUser.Token}
	carol.want(200, "GET", "/v1/me", nil) // first sight upserts the user

	a, b := testenv.Slug("acme"), testenv.Slug("bolt")
	r := alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": a, "name": "Acme"})
	if r.json(t)["role"] != "owner" {
		t.Fatalf("creator is not owner: %s", r.Body)
	}
	bob.want(201, "POST", "/v1/tenants", map[string]string{"slug": b, "name": "Bolt"})
	bob.want(409, "POST", "/v1/tenants", map[string]string{"slug": a, "name": "Taken"})
	r = bob.want(422, "POST", "/v1/tenants", map[string]string{"slug": "No Good"})
	if r.json(t)["code"] != "invalid" {
		t.Fatalf("bad slug body: %s", r.Body)
	}

	// Projects.
	r = alice.want(201, "POST", "/v1/tenants/"+a+"/projects", map[string]any{
		"key": "WEB", "name": "Website relaunch", "description": "new marketing site", "status": "active",
		"start_date": "2026-01-01", "deadline": "2026-02-01", "budget": map[string]any{"amount_minor": 1250000, "currency": "EUR"},
		"id": "00000000-0000-0000-0000-000000000001", "created_by": "00000000-0000-0000-0000-000000000002",
	})
	p := r.json(t)
	id, etag := p["id"].(string), p["etag"].(string)
	if id == "00000000-0000-0000-0000-000000000001" || p["created_by"] == "00000000-0000-0000-0000-000000000002" {
		t.Fatalf("client-set id/created_by applied: %s", r.Body)
	}
	if p["overdue"] != true {
		t.Fatalf("project past its deadline is not overdue: %s", r.Body)
	}
	if bs := p["budget_summary"].(map[string]any); bs["planned"].(float64) != 1250000 || bs["remaining"].(float64) != 1250000 {
		t.Fatalf("budget_summary %v", bs)
	}
	alice.want(409, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "WEB", "name": "dup"})
	r = alice.want(422, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "x", "name": "", "start_date": "2026-05-01",
		"deadline": "2026-04-01", "budget": map[string]any{"amount_minor": -1, "currency": "EUR"}})
	if errs := r.json(t)["errors"].([]any); len(errs) < 4 {
		t.Fatalf("want field details for key, name, deadline, budget: %s", r.Body)
	}
	alice.want(422, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "ABC", "name": "n", "budget": map[string]any{"amount_minor": 1, "currency": "XYZ"}})
	alice.want(422, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "ABC", "name": "n", "colour": "red"})
	alice.want(415, "POST", "/v1/tenants/"+a+"/projects", "key=ABC", "Content-Type", "text/plain")
	alice.want(201, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "OPS", "name": "Operations handbook", "status": "planned", "deadline": "2099-01-01"})

	r = alice.want(200, "GET", "/v1/tenants/"+a+"/projects?q=marketing", nil)
	if items := r.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id {
		t.Fatalf("full-text search: %s", r.Body)
	}
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/projects?overdue=true", nil)
	if items := r.json(t)["items"].([]any); len(items) != 1 {
		t.Fatalf("overdue filter: %s", r.Body)
	}
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/projects?limit=1", nil)
	page := r.json(t)
	cursor, _ := page["next_cursor"].(string)
	if len(page["items"].([]any)) != 1 || cursor == "" {
		t.Fatalf("pagination: %s", r.Body)
	}
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/projects?limit=1&cursor="+cursor, nil)
	if len(r.json(t)["items"].([]any)) != 1 || r.json(t)["next_cursor"] != nil {
		t.Fatalf("second page: %s", r.Body)
	}
	alice.want(422, "GET", "/v1/tenants/"+a+"/projects?cursor=garbage!", nil)
	alice.want(422, "GET", "/v1/tenants/"+a+"/projects?limit=1000", nil)

	// PATCH needs If-Match.
	path := "/v1/tenants/" + a + "/projects/" + id
	alice.want(428, "PATCH", path, map[string]any{"name": "x"})
	alice.want(412, "PATCH", path, map[string]any{"name": "x"}, "If-Match", `"999"`)
	r = alice.want(200, "PATCH", path, map[string]any{"name": "Website 2.0", "status": "completed", "version": 77}, "If-Match", etag)
	up := r.json(t)
	if up["name"] != "Website 2.0" || up["etag"] == etag || up["overdue"] != false || r.Header.Get("ETag") != up["etag"] {
		t.Fatalf("patch result: %s", r.Body)
	}
	alice.want(412, "PATCH", path, map[string]any{"name": "stale"}, "If-Match", etag)

	// Another tenant's member: every way in answers 404 and changes nothing.
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/tenants/" + a},
		{"GET", "/v1/tenants/" + a + "/projects"},
		{"GET", path},
		{"PATCH", path},
		{"DELETE", path},
		{"GET", "/v1/tenants/" + a + "/members"},
		{"GET", "/v1/tenants/" + a + "/audit"},
		{"GET", "/v1/tenants/" + b + "/projects/" + id}, // A's id through B
		{"PATCH", "/v1/tenants/" + b + "/projects/" + id},
		{"DELETE", "/v1/tenants/" + b + "/projects/" + id},
		{"DELETE", "/v1/tenants/" + a},
	} {
		r := bob.do(tc.method, tc.path, map[string]any{"name": "pwned"}, "If-Match", up["etag"].(string))
		if r.Status != http.StatusNotFound {
			t.Errorf("bob %s %s: %d, want 404: %s", tc.method, tc.path, r.Status, r.Body)
		}
	}
	r = alice.want(200, "GET", path, nil)
	if r.json(t)["name"] != "Website 2.0" || r.json(t)["etag"] != up["etag"] {
		t.Fatalf("cross-tenant attempts changed the project: %s", r.Body)
	}

	// Roles: carol becomes a viewer of A.
	r = alice.want(201, "PUT", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), map[string]string{"role": "viewer"})
	carol.want(200, "GET", "/v1/tenants/"+a+"/projects", nil)
	r = carol.want(403, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "NOPE", "name": "n"})
	if r.json(t)["code"] != "forbidden" {
		t.Fatalf("403 body: %s", r.Body)
	}
	carol.want(403, "PATCH", path, map[string]any{"name": "viewer edit"}, "If-Match", up["etag"].(string))
	carol.want(403, "GET", "/v1/tenants/"+a+"/audit", nil)
	alice.want(422, "PUT", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), map[string]string{"role": "emperor"})
	alice.want(200, "PUT", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), map[string]string{"role": "manager"})
	carol.want(201, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "MGR", "name": "by the manager"})
	alice.want(200, "PUT", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), map[string]string{"role": "admin"})
	carol.want(403, "PUT", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), map[string]string{"role": "owner"})
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/members", nil)
	if items := r.json(t)["items"].([]any); len(items) != 2 {
		t.Fatalf("members: %s", r.Body)
	}
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/roles", nil)
	if items := r.json(t)["items"].([]any); len(items) != 5 {
		t.Fatalf("roles: %s", r.Body)
	}
	aliceID := mustMe(t, alice)
	alice.want(409, "DELETE", "/v1/tenants/"+a+"/members/"+aliceID, nil)
	alice.want(204, "DELETE", "/v1/tenants/"+a+"/members/"+carolUser.ID.String(), nil)
	carol.want(404, "GET", "/v1/tenants/"+a+"/projects", nil)

	// Delete, audit.
	alice.want(204, "DELETE", path, nil)
	alice.want(404, "GET", path, nil)
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/audit?object_id="+id, nil)
	var actions []string
	for _, e := range r.json(t)["items"].([]any) {
		actions = append(actions, e.(map[string]any)["action"].(string))
	}
	if strings.Join(actions, ",") != "project.delete,project.update,project.create" {
		t.Fatalf("audit of the project: %v", actions)
	}
	r = alice.want(200, "GET", "/v1/tenants/"+a+"/audit?outcome=denied", nil)
	if len(r.json(t)["items"].([]any)) < 2 {
		t.Fatalf("denied attempts not audited: %s", r.Body)
	}

	r = alice.want(200, "GET", "/v1/me", nil)
	ms := r.json(t)["memberships"].([]any)
	if len(ms) != 1 || ms[0].(map[string]any)["tenant"] != a || ms[0].(map[string]any)["role"] != "owner" {
		t.Fatalf("me.memberships: %s", r.Body)
	}
}

func mustMe(t *testing.T, c client) string {
	t.Helper()
	return c.want(200, "GET", "/v1/me", nil).json(t)["user"].(map[string]any)["id"].(string)
}

// With Kratos unreachable, a session that is not cached cannot be verified:
// the API answers 503 with Retry-After (never a pass, never a misleading
// 401). /readyz stays 200, since this process can still serve (cached
// sessions, JWTs) and a shared dependency's outage must not take every
// replica out of the load balancer, but names kratos as unavailable, and
// the dependency gauge says so.
func TestKratosDownFailsClosed(t *testing.T) {
	u := testenv.SignUp(t, "kratos-down")
	base, metricsBase := runWithMetrics(t, "serve", testenv.DatabaseURL(), "-kratos-public-url", "http://127.0.0.1:1")
	c := client{t: t, base: base, token: u.Token}
	r := c.want(503, "GET", "/v1/me", nil)
	if r.json(t)["code"] != "unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("503 without code or Retry-After: %v %s", r.Header, r.Body)
	}
	anon := client{t: t, base: base}
	r = anon.want(200, "GET", "/readyz", nil)
	body := r.json(t)
	if checks := body["checks"].(map[string]any); checks["kratos"] != "unavailable" || checks["postgres"] != "ok" || body["status"] != "degraded" {
		t.Fatalf("readyz: %s", r.Body)
	}
	m := scrapeMetrics(t, metricsBase)
	if v, ok := m[`promanage_dependency_up{dependency="kratos"}`]; !ok || v != 0 {
		t.Fatalf("kratos dependency gauge: %v (present %v)", v, ok)
	}
	if v, ok := m[`promanage_dependency_up{dependency="postgres"}`]; !ok || v != 1 {
		t.Fatalf("postgres dependency gauge: %v (present %v)", v, ok)
	}
}
