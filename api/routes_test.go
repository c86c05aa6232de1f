package api

import (
	"regexp"
	"strings"
	"testing"

	"github.com/promanage/promanage/rbac"
)

// Every route under /v1/tenants/:tenant/ must name a permission from the
// vocabulary, and the OpenAPI document must describe exactly the routes
// served, with the same permission.
func TestRouteTableIsAuthorizedAndDocumented(t *testing.T) {
	s := New(Deps{}, nil)
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	paths := doc["paths"].(map[string]any)
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range s.Routes() {
		name := r.Method + " " + r.Path
		if strings.HasPrefix(r.Path, "/v1/tenants/:tenant") {
			if r.Public || r.Perm == nil {
				t.Errorf("%s: tenant route without a permission", name)
				continue
			}
			if !r.Perm.Valid() {
				t.Errorf("%s: permission %s not in the vocabulary", name, r.Perm)
			}
		}
		if r.Public {
			t.Errorf("%s: /v1 routes must not be public", name)
		}
		oaPath := param.ReplaceAllString(r.Path, "{$1}")
		ops, ok := paths[oaPath].(map[string]any)
		if !ok {
			t.Errorf("%s: missing from openapi.yaml (%s)", name, oaPath)
			continue
		}
		op, ok := ops[strings.ToLower(r.Method)].(map[string]any)
		if !ok {
			t.Errorf("%s: method missing from openapi.yaml", name)
			continue
		}
		if r.Perm != nil && op["x-permission"] != r.Perm.String() {
			t.Errorf("%s: openapi x-permission %v, route %s", name, op["x-permission"], r.Perm)
		}
		// Clients must know which calls bypass the session cache (a
		// revoked session fails there at once).
		desc, _ := op["description"].(string)
		if says := strings.Contains(desc, "verified with Kratos (no cache)"); says != r.Fresh {
			t.Errorf("%s: Fresh is %v, but the description says %q", name, r.Fresh, desc)
		}
		served[strings.ToLower(r.Method)+" "+oaPath] = true
	}
	for p, v := range paths {
		if !strings.HasPrefix(p, "/v1/") {
			continue
		}
		for m := range v.(map[string]any) {
			if m == "parameters" {
				continue
			}
			// Public operations (security: []) are served outside the route
			// table; TestOpenAPIMatchesServedRoutes covers them.
			if sec, ok := v.(map[string]any)[m].(map[string]any)["security"].([]any); ok && len(sec) == 0 {
				continue
			}
			if !served[m+" "+p] {
				t.Errorf("openapi.yaml documents %s %s, which is not served", m, p)
			}
		}
	}
}

// The built-in roles follow API.md: each role contains the one below it.
func TestBuiltinRolesAreNested(t *testing.T) {
	names := rbac.BuiltinRoleNames
	for i := 0; i+1 < len(names); i++ {
		upper := map[rbac.Permission]bool{}
		for _, p := range rbac.BuiltinPermissions(names[i]) {
			upper[p] = true
		}
		for _, p := range rbac.BuiltinPermissions(names[i+1]) {
			if !upper[p] {
				t.Errorf("%s lacks %s that %s has", names[i], p, names[i+1])
			}
		}
	}
}

// The OpenAPI document lists exactly the operations the app serves,
// including those outside the route table (health, metrics, docs, signed
// blob downloads).
func TestOpenAPIMatchesServedRoutes(t *testing.T) {
	s := New(Deps{}, nil)
	_, doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	paths := doc["paths"].(map[string]any)
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range s.App().GetRoutes(true) {
		if r.Method == "HEAD" {
			continue // fiber adds HEAD to every GET
		}
		op := strings.ToLower(r.Method) + " " + param.ReplaceAllString(r.Path, "{$1}")
		served[op] = true
		path, method, _ := strings.Cut(op, " ")
		path, method = method, path
		ops, ok := paths[path].(map[string]any)
		if !ok || ops[method] == nil {
			t.Errorf("served but not documented: %s", op)
		}
	}
	for p, v := range paths {
		for m := range v.(map[string]any) {
			if m != "parameters" && !served[m+" "+p] {
				t.Errorf("documented but not served: %s %s", m, p)
			}
		}
	}
}
