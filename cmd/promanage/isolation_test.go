package main

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/rbac"
)

// The isolation suite walks the route table itself, so routes other areas
// add later join it without anyone editing this file. Path parameters are
// filled with real ids of the tenant's objects where the suite could find
// them (fixtures created below, plus the first item of every list route),
// and with random UUIDs otherwise.

func tenantRoutes(t *testing.T) []api.Route {
	t.Helper()
	var out []api.Route
	for _, r := range api.New(api.Deps{}, nil).Routes() {
		if strings.HasPrefix(r.Path, "/v1/tenants/:tenant") {
			if r.Perm == nil {
				t.Fatalf("%s %s: tenant route without permission", r.Method, r.Path)
			}
			out = append(out, r)
		}
	}
	if len(out) < 15 {
		t.Fatalf("only %d tenant routes in the table: the suite would prove nothing", len(out))
	}
	// Destructive routes on the tenant itself go last.
	sort.SliceStable(out, func(i, j int) bool { return !isTenantDelete(out[i]) && isTenantDelete(out[j]) })
	return out
}

func isTenantDelete(r api.Route) bool { return r.Method == "DELETE" && r.Path == "/v1/tenants/:tenant" }

// fixtures are real values for path parameters, keyed by the path segment
// before the parameter ("projects" for /projects/:id) or by its name.
type fixtures map[string]string

// fill builds a concrete path. unknown returns the value of a parameter the
// fixtures lack.
func (f fixtures) fill(path, slug string, unknown func(prev, param string) string) (string, bool) {
	segs := strings.Split(path, "/")
	allReal := true
	for i, s := range segs {
		if !strings.HasPrefix(s, ":") {
			continue
		}
		param, prev := s[1:], ""
		if i > 0 {
			prev = segs[i-1]
		}
		switch {
		case param == "tenant":
			segs[i] = slug
		case f[prev] != "":
			segs[i] = f[prev]
		case f[":"+param] != "":
			segs[i] = f[":"+param]
		default:
			segs[i] = unknown(prev, param)
			allReal = false
		}
	}
	return strings.Join(segs, "/"), allReal
}

func randomParam(prev, param string) string {
	switch {
	case prev == "roles":
		return "no-such-role"
	case param == "n" || prev == "versions":
		return "1"
	}
	return uuid.NewString()
}

// isolationTenant creates a tenant owned by owner with a project, a custom
// role, a member, and whatever other objects the current route table lets it
// create, and returns the fixtures (ids of A's objects).
func isolationTenant(t *testing.T, owner client, slug string, routes []api.Route, member testenv.User) fixtures {
	t.Helper()
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Isolation"})
	owner.want(201, "PUT", tp+"/members/"+member.ID.String(), map[string]string{"role": "viewer"})
	owner.want(201, "PUT", tp+"/roles/fixture-role", map[string]any{"permissions": []string{"projects:read"}})
	p := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "ISO", "name": "Isolated", "budget": map[string]any{"amount_minor": 100000, "currency": "EUR"}}).json(t)
	f := fixtures{"projects": p["id"].(string), "members": member.ID.String(), "roles": "fixture-role"}

	// Objects of other areas, created through their API.md shapes when their
	// routes exist (best effort: a failure only means fewer real ids).
	has := func(method, path string) bool {
		return slices.ContainsFunc(routes, func(r api.Route) bool { return r.Method == method && r.Path == path })
	}
	create := map[string]map[string]any{
		"tasks":      {"title": "isolated task"},
		"milestones": {"name": "isolated milestone", "due_date": "2099-01-01"},
		"expenses":   {"amount_minor": 1000, "currency": "EUR", "category": "travel", "spent_on": "2026-01-02"},
	}
	for seg, body := range create {
		if has("POST", "/v1/tenants/:tenant/projects/:id/"+seg) {
			if r := owner.do("POST", tp+"/projects/"+f["projects"]+"/"+seg, body); r.Status == 201 {
				var m map[string]any
				if json.Unmarshal(r.Body, &m) == nil {
					if id, ok := m["id"].(string); ok {
						f[seg] = id
					}
				}
			}
		}
	}
	if has("POST", "/v1/tenants/:tenant/projects/:id/documents") {
		body, ct := multipartFile()
		if r := owner.do("POST", tp+"/projects/"+f["projects"]+"/documents", body, "Content-Type", ct); r.Status == 201 {
			var m map[string]any
			if json.Unmarshal(r.Body, &m) == nil {
				if id, ok := m["id"].(string); ok {
					f["documents"] = id
				}
			}
		}
	}
	// Every list route's first item names a real object too.
	for pass := 0; pass < 3; pass++ {
		for _, r := range routes {
			if r.Method != "GET" || strings.HasPrefix(r.Path[strings.LastIndex(r.Path, "/")+1:], ":") {
				continue
			}
			seg := r.Path[strings.LastIndex(r.Path, "/")+1:]
			if f[seg] != "" {
				continue
			}
			path, real := f.fill(r.Path, slug, randomParam)
			if !real {
				continue
			}
			resp := owner.do("GET", path, nil)
			var page struct {
				Items []map[string]any `json:"items"`
			}
			if resp.Status == 200 && json.Unmarshal(resp.Body, &page) == nil && len(page.Items) > 0 {
				if id, ok := page.Items[0]["id"].(string); ok {
					f[seg] = id
				}
			}
		}
	}
	t.Logf("fixtures: %v", f)
	return f
}

// multipartFile is a multipart/form-data body with one small "file" part.
func multipartFile() (body, contentType string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, _ := w.CreateFormFile("file", "isolated.txt")
	fw.Write([]byte("isolated document"))
	w.Close()
	return buf.String(), w.FormDataContentType()
}

// takesMultipart reports whether the OpenAPI document says the route's body
// is multipart/form-data.
func takesMultipart(t *testing.T, r api.Route) bool {
	t.Helper()
	_, doc, err := api.Spec()
	if err != nil {
		t.Fatal(err)
	}
	oaPath := regexp.MustCompile(`:([a-z_]+)`).ReplaceAllString(r.Path, "{$1}")
	ops, _ := doc["paths"].(map[string]any)[oaPath].(map[string]any)
	op, _ := ops[strings.ToLower(r.Method)].(map[string]any)
	rb, _ := op["requestBody"].(map[string]any)
	content, _ := rb["content"].(map[string]any)
	_, ok := content["multipart/form-data"]
	return ok
}

// (a) Every built-in role against every tenant route: a role whose
// permissions (rbac.BuiltinPermissions, which encode API.md's role
// descriptions) lack the route's permission gets exactly 403; a role that
// has it never gets 403; someone outside the tenant gets 404.
func TestIsolationRoleMatrix(t *testing.T) {
	base := server(t, "-rate-limit-user", "0", "-rate-limit-tenant", "0")
	routes := tenantRoutes(t)
	ownerU := testenv.SignUp(t, "owner")
	owner := client{t: t, base: base, token: ownerU.Token}
	users := map[string]client{rbac.RoleOwner: owner}
	viewer := testenv.SignUp(t, "fixture")
	(client{t: t, base: base, token: viewer.Token}).want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("matrix")
	f := isolationTenant(t, owner, slug, routes, viewer)
	f["members"], f["roles"] = "", "" // never remove a real member or role here
	for _, role := range []string{rbac.RoleAdmin, rbac.RoleManager, rbac.RoleMember, rbac.RoleViewer} {
		u := testenv.SignUp(t, role)
		c := client{t: t, base: base, token: u.Token}
		c.want(200, "GET", "/v1/me", nil)
		owner.want(201, "PUT", "/v1/tenants/"+slug+"/members/"+u.ID.String(), map[string]string{"role": role})
		users[role] = c
	}
	outsider := client{t: t, base: base, token: testenv.SignUp(t, "outsider").Token}

	// Least powerful first, so that a destructive call by an allowed role
	// runs after every denied role has been tried on the same object.
	order := []string{rbac.RoleViewer, rbac.RoleMember, rbac.RoleManager, rbac.RoleAdmin, rbac.RoleOwner}
	for _, r := range routes {
		path, _ := f.fill(r.Path, slug, randomParam)
		var body any
		if r.Method != "GET" && r.Method != "DELETE" {
			body = map[string]any{}
		}
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			if got := outsider.do(r.Method, path, body).Status; got != http.StatusNotFound {
				t.Errorf("outsider: %d, want 404", got)
			}
			for _, role := range order {
				allowed := slices.Contains(rbac.BuiltinPermissions(role), *r.Perm)
				resp := users[role].do(r.Method, path, body)
				switch {
				case allowed && resp.Status == http.StatusForbidden:
					t.Errorf("%s holds %s but got 403: %s", role, r.Perm, resp.Body)
				case !allowed && resp.Status != http.StatusForbidden:
					t.Errorf("%s lacks %s but got %d, want 403: %s", role, r.Perm, resp.Status, resp.Body)
				case !allowed && !strings.Contains(string(resp.Body), `"code":"forbidden"`):
					t.Errorf("%s: 403 without code forbidden: %s", role, resp.Body)
				}
			}
		})
	}
}

// (b) BOLA: for every route that takes an id, a member (owner, even) of
// another tenant using tenant A's real ids, through A's path or through
// their own tenant's path, gets 404, and A's data does not change.
func TestIsolationCrossTenantIDs(t *testing.T) {
	base := server(t, "-rate-limit-user", "0", "-rate-limit-tenant", "0")
	routes := tenantRoutes(t)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "alice").Token}
	mallory := client{t: t, base: base, token: testenv.SignUp(t, "mallory").Token}
	victim := testenv.SignUp(t, "victim")
	(client{t: t, base: base, token: victim.Token}).want(200, "GET", "/v1/me", nil)
	a, b := testenv.Slug("victim"), testenv.Slug("attacker")
	f := isolationTenant(t, alice, a, routes, victim)
	mallory.want(201, "POST", "/v1/tenants", map[string]string{"slug": b})

	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, r := range routes {
			if r.Method != "GET" {
				continue
			}
			path, real := f.fill(r.Path, a, randomParam)
			if !real {
				continue
			}
			resp := alice.do("GET", path, nil)
			if resp.Status == http.StatusOK {
				out[path] = string(resp.Body) + " " + resp.Header.Get("ETag")
			}
		}
		return out
	}
	before := snapshot()
	// Responses that differ between two identical reads (signed URLs, ...)
	// cannot show a change; they are left out.
	for path, v := range snapshot() {
		if before[path] != v {
			t.Logf("%s varies between reads: not compared", path)
			delete(before, path)
		}
	}
	if len(before) < 5 {
		t.Fatalf("only %d stable reads to compare", len(before))
	}
	valid := validBodies()
	var checked int
	for _, r := range routes {
		if strings.Count(r.Path, ":") < 2 || isTenantDelete(r) {
			continue // no id besides the tenant
		}
		pathA, real := f.fill(r.Path, a, randomParam)
		if !real {
			t.Logf("%s %s: no real id available; checked with random ids only", r.Method, r.Path)
		}
		var body any
		var headers []string
		known := true
		if r.Method != "GET" && r.Method != "DELETE" {
			m, ok := valid[r.Method+" "+r.Path]
			switch {
			case ok:
				body = m
			case takesMultipart(t, r):
				// The call a client makes: a small file upload.
				var ct string
				body, ct = multipartFile()
				headers = append(headers, "Content-Type", ct)
			default:
				body, known = map[string]any{}, false
			}
		}
		// A body the suite cannot build may fail validation (422) before
		// the lookup; that reveals nothing about A's object either.
		okStatus := func(s int) bool { return s == http.StatusNotFound || (!known && s == http.StatusUnprocessableEntity) }
		etag := alice.do("GET", pathA, nil).Header.Get("ETag")
		if etag == "" {
			etag = `"1"`
		}
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			if got := mallory.do(r.Method, pathA, body, append([]string{"If-Match", etag}, headers...)...); got.Status != http.StatusNotFound { // not even a member
				t.Errorf("via the victim's path %s: %d, want 404: %s", pathA, got.Status, got.Body)
			}
			// Through the attacker's own tenant, where they may do anything:
			// A's object ids must not resolve. User ids and role names are
			// not tenant objects (adding a user to B is legitimate).
			segs := strings.Split(r.Path, "/")
			last := segs[len(segs)-2]
			if last == "members" || last == "roles" {
				return
			}
			pathB := "/v1/tenants/" + b + strings.TrimPrefix(pathA, "/v1/tenants/"+a)
			if got := mallory.do(r.Method, pathB, body, append([]string{"If-Match", etag}, headers...)...); !okStatus(got.Status) {
				t.Errorf("via the attacker's tenant %s: %d, want 404: %s", pathB, got.Status, got.Body)
			}
		})
		checked++
	}
	if checked < 5 {
		t.Fatalf("only %d routes with ids checked", checked)
	}
	after := snapshot()
	for path, was := range before {
		if after[path] != was {
			t.Errorf("cross-tenant attempts changed %s:\nbefore %s\nafter  %s", path, was, after[path])
		}
	}
}

// validBodies are request bodies a client would send, for the write routes
// whose shapes API.md fixes (routes without one get {}).
func validBodies() map[string]map[string]any {
	return map[string]map[string]any{
		"POST /v1/tenants":                                      {"slug": testenv.Slug("mass")},
		"PATCH /v1/tenants/:tenant":                             {"name": "Renamed"},
		"PUT /v1/tenants/:tenant/members/:user_id":              {"role": "viewer"},
		"PUT /v1/tenants/:tenant/roles/:name":                   {"permissions": []string{"projects:read"}},
		"POST /v1/tenants/:tenant/projects":                     {"key": "MASS", "name": "mass"},
		"PATCH /v1/tenants/:tenant/projects/:id":                {"name": "mass 2"},
		"POST /v1/tenants/:tenant/projects/:id/tasks":           {"title": "mass"},
		"POST /v1/tenants/:tenant/projects/:id/milestones":      {"name": "mass", "due_date": "2099-01-01"},
		"POST /v1/tenants/:tenant/projects/:id/expenses":        {"amount_minor": 100, "currency": "EUR", "category": "x", "spent_on": "2026-01-02"},
		"PATCH /v1/tenants/:tenant/projects/:id/tasks/:task_id": {"title": "mass 2"},
	}
}

// (c) Mass assignment: every JSON write route ignores or rejects fields a
// client must not set (ids, tenant, author, version, role), never applies
// them.
func TestIsolationMassAssignment(t *testing.T) {
	base := server(t, "-rate-limit-user", "0", "-rate-limit-tenant", "0")
	routes := tenantRoutes(t)
	aliceU := testenv.SignUp(t, "alice")
	alice := client{t: t, base: base, token: aliceU.Token}
	victim := testenv.SignUp(t, "member")
	(client{t: t, base: base, token: victim.Token}).want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("mass")
	f := isolationTenant(t, alice, slug, routes, victim)

	fakeID, fakeTenant, fakeAuthor := uuid.NewString(), uuid.NewString(), uuid.NewString()
	injected := map[string]any{"id": fakeID, "tenant_id": fakeTenant, "created_by": fakeAuthor, "version": 999,
		"tenant": "someone-else", "etag": `"999"`}
	valid := validBodies()
	writes := []api.Route{{Method: "POST", Path: "/v1/tenants"}}
	for _, r := range routes {
		if r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH" {
			writes = append(writes, r)
		}
	}
	for _, r := range writes {
		name := r.Method + " " + r.Path
		t.Run(name, func(t *testing.T) {
			path, _ := f.fill(r.Path, slug, randomParam)
			body := map[string]any{}
			for k, v := range valid[name] {
				body[k] = v
			}
			for k, v := range injected {
				body[k] = v
			}
			if !strings.HasSuffix(r.Path, "/members/:user_id") {
				body["role"] = rbac.RoleOwner
			}
			etag := alice.do("GET", path, nil).Header.Get("ETag")
			resp := alice.do(r.Method, path, body, "If-Match", etag)
			if resp.Status >= 500 {
				t.Fatalf("%d: %s", resp.Status, resp.Body)
			}
			for _, v := range []string{fakeID, fakeTenant, fakeAuthor, "someone-else"} {
				if strings.Contains(string(resp.Body), v) {
					t.Fatalf("client-set value %s applied (status %d): %s", v, resp.Status, resp.Body)
				}
			}
			var out map[string]any
			if json.Unmarshal(resp.Body, &out) == nil {
				if v, ok := out["version"].(float64); ok && v == 999 {
					t.Fatalf("client-set version applied: %s", resp.Body)
				}
				if id, ok := out["id"].(string); ok && resp.Status < 300 {
					// Read it back where the API serves it.
					loc := resp.Header.Get("Location")
					if loc == "" && r.Method == "POST" {
						loc = path + "/" + id
					}
					if loc != "" {
						if got := alice.do("GET", loc, nil); got.Status == 200 && strings.Contains(string(got.Body), fakeAuthor) {
							t.Fatalf("stored with the client's created_by: %s", got.Body)
						}
					}
				}
			}
			if valid[name] != nil && resp.Status != 422 && resp.Status >= 300 {
				t.Errorf("a valid body with read-only extras: %d, want 2xx (ignored) or 422 (rejected): %s", resp.Status, resp.Body)
			}
		})
	}
	// Nobody became owner through a "role" field.
	r := alice.want(200, "GET", "/v1/tenants/"+slug+"/members", nil)
	for _, m := range r.json(t)["items"].([]any) {
		if mm := m.(map[string]any); mm["role"] == rbac.RoleOwner && mm["user_id"] != aliceU.ID.String() {
			t.Fatalf("a role field made %v an owner", mm["user_id"])
		}
	}
}
