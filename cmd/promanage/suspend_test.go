package main

import (
	"context"
	"io"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// Without Redis nothing tells the API that the operator's CLI suspended a
// tenant; writes must still be refused at once (every unsafe request
// reads the tenant's state fresh), not after the registry cache expires.
func TestSuspensionStopsWritesAtOnceWithoutRedis(t *testing.T) {
	base := server(t, "-redis-url", "")
	owner := client{t: t, base: base, token: testenv.SignUp(t, "suspend-owner").Token}
	slug := testenv.Slug("susp")
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	p1 := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "ONE", "name": "one"}).json(t)["id"].(string)
	p2 := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "TWO", "name": "two"}).json(t)["id"].(string)
	owner.want(200, "GET", tp+"/projects/"+p1, nil) // the tenant is now in the API's cache

	operator := func(sub string) {
		t.Helper()
		m := NewMain(io.Discard, io.Discard)
		if err := m.Run(context.Background(), []string{"tenant", sub, "-slug", slug, "-database-url", testenv.DatabaseURL(),
			"-redis-url", "", "-log-level", "error"}); err != nil {
			t.Fatalf("tenant %s: %v", sub, err)
		}
	}
	operator("suspend")
	for _, tc := range []struct{ method, path string }{
		{"DELETE", tp + "/projects/" + p1},
		{"POST", tp + "/projects"},
		{"PATCH", tp},
	} {
		r := owner.want(403, tc.method, tc.path, map[string]any{"key": "NEW", "name": "n"})
		if r.json(t)["code"] != "tenant_suspended" {
			t.Fatalf("%s %s: %s", tc.method, tc.path, r.Body)
		}
	}
	operator("resume")
	owner.want(204, "DELETE", tp+"/projects/"+p2, nil)
	eventuallyStatus(t, owner, 200, "GET", tp+"/projects/"+p1) // the refused DELETE changed nothing
}
