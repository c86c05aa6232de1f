package main

import (
	"slices"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// A custom role that may manage members cannot lift anyone (itself included)
// above its own permissions, nor remove someone whose role holds more.
func TestRoleCeilingOnMembers(t *testing.T) {
	base := server(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "ceil-owner").Token}
	hrUser := testenv.SignUp(t, "ceil-hr")
	hr := client{t: t, base: base, token: hrUser.Token}
	adminUser := testenv.SignUp(t, "ceil-admin")
	admin := client{t: t, base: base, token: adminUser.Token}
	hr.want(200, "GET", "/v1/me", nil)
	admin.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("ceil")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	ten := "/v1/tenants/" + slug
	owner.want(201, "PUT", ten+"/roles/hr", map[string]any{"permissions": []string{"members:read", "members:manage", "tenant:read"}})
	owner.want(201, "PUT", ten+"/members/"+hrUser.ID.String(), map[string]string{"role": "hr"})
	owner.want(201, "PUT", ten+"/members/"+adminUser.ID.String(), map[string]string{"role": "admin"})

	hr.want(403, "PUT", ten+"/members/"+hrUser.ID.String(), map[string]string{"role": "admin"})
	hr.want(403, "PUT", ten+"/members/"+adminUser.ID.String(), map[string]string{"role": "viewer"})
	hr.want(403, "DELETE", ten+"/members/"+adminUser.ID.String(), nil)
	r := owner.want(200, "GET", ten+"/members", nil)
	for _, m := range r.json(t)["items"].([]any) {
		m := m.(map[string]any)
		if m["user_id"] == adminUser.ID.String() && m["role"] != "admin" {
			t.Fatalf("admin's role changed to %v", m["role"])
		}
		if m["user_id"] == hrUser.ID.String() && m["role"] != "hr" {
			t.Fatalf("hr escalated to %v", m["role"])
		}
	}
	// The admin, who holds everything hr holds, may demote hr.
	admin.want(200, "PUT", ten+"/members/"+hrUser.ID.String(), map[string]string{"role": "viewer"})
}

// The ceiling counts the target's CURRENT role: a custom role that holds
// members:manage and everything a viewer holds still cannot demote an admin
// to viewer (the admin's role holds more than it), nor then remove them.
func TestRoleCeilingCountsCurrentRole(t *testing.T) {
	base := server(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "cur-owner").Token}
	hrUser, adminUser := testenv.SignUp(t, "cur-hr"), testenv.SignUp(t, "cur-admin")
	hr := client{t: t, base: base, token: hrUser.Token}
	admin := client{t: t, base: base, token: adminUser.Token}
	hr.want(200, "GET", "/v1/me", nil)
	admin.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("cur")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	ten := "/v1/tenants/" + slug
	hrPerms := append(rolePerms(t, owner, ten, "viewer"), "members:manage")
	owner.want(201, "PUT", ten+"/roles/hr", map[string]any{"permissions": hrPerms})
	owner.want(201, "PUT", ten+"/members/"+hrUser.ID.String(), map[string]string{"role": "hr"})
	owner.want(201, "PUT", ten+"/members/"+adminUser.ID.String(), map[string]string{"role": "admin"})

	r := hr.want(403, "PUT", ten+"/members/"+adminUser.ID.String(), map[string]string{"role": "viewer"})
	if r.json(t)["code"] != "forbidden" {
		t.Fatalf("body %s", r.Body)
	}
	hr.want(403, "DELETE", ten+"/members/"+adminUser.ID.String(), nil)
	if got := memberRole(t, owner, ten, adminUser.ID.String()); got != "admin" {
		t.Fatalf("admin's role is %q after hr's attempts, want admin", got)
	}
	// Denied attempts are audited.
	r = owner.want(200, "GET", ten+"/audit?outcome=denied&object_id="+adminUser.ID.String(), nil)
	if n := len(r.json(t)["items"].([]any)); n < 2 {
		t.Fatalf("%d denied attempts audited, want 2: %s", n, r.Body)
	}
	// Within its ceiling hr still works: a viewer can be added and removed.
	v := testenv.SignUp(t, "cur-viewer")
	(client{t: t, base: base, token: v.Token}).want(200, "GET", "/v1/me", nil)
	hr.want(201, "PUT", ten+"/members/"+v.ID.String(), map[string]string{"role": "viewer"})
	hr.want(204, "DELETE", ten+"/members/"+v.ID.String(), nil)
}

// The ceiling counts every current holder of a role being changed: a role
// manager cannot strip plugins:manage from the role admins of plugins hold
// (nor delete it, nor grow its own role).
func TestRoleCeilingCountsRoleHolders(t *testing.T) {
	base := server(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "hold-owner").Token}
	rmUser, opsUser := testenv.SignUp(t, "hold-rm"), testenv.SignUp(t, "hold-ops")
	rm := client{t: t, base: base, token: rmUser.Token}
	(client{t: t, base: base, token: opsUser.Token}).want(200, "GET", "/v1/me", nil)
	rm.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("hold")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	ten := "/v1/tenants/" + slug
	owner.want(201, "PUT", ten+"/roles/plugin-admin", map[string]any{"permissions": []string{"tenant:read", "plugins:read", "plugins:manage"}})
	owner.want(201, "PUT", ten+"/roles/role-manager", map[string]any{"permissions": []string{"tenant:read", "roles:read", "roles:manage", "plugins:read"}})
	owner.want(201, "PUT", ten+"/members/"+opsUser.ID.String(), map[string]string{"role": "plugin-admin"})
	owner.want(201, "PUT", ten+"/members/"+rmUser.ID.String(), map[string]string{"role": "role-manager"})

	cases := []struct {
		name, method, role string
		perms              []string
	}{
		{"StripHeldRole", "PUT", "plugin-admin", []string{"tenant:read", "plugins:read"}},
		{"GrowOwnRole", "PUT", "role-manager", []string{"tenant:read", "roles:read", "roles:manage", "plugins:read", "plugins:manage"}},
		{"DeleteRoleAbove", "DELETE", "plugin-admin", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.perms != nil {
				body = map[string]any{"permissions": tc.perms}
			}
			rm := client{t: t, base: base, token: rmUser.Token}
			if r := rm.want(403, tc.method, ten+"/roles/"+tc.role, body); r.json(t)["code"] != "forbidden" {
				t.Fatalf("body %s", r.Body)
			}
		})
	}
	got := rolePerms(t, owner, ten, "plugin-admin")
	if !slices.Contains(got, "plugins:manage") {
		t.Fatalf("plugin-admin lost plugins:manage: %v", got)
	}
	if got := rolePerms(t, owner, ten, "role-manager"); slices.Contains(got, "plugins:manage") {
		t.Fatalf("role-manager grew: %v", got)
	}
	// A role within its ceiling can still be shrunk by the role manager.
	rm.want(201, "PUT", ten+"/roles/readers", map[string]any{"permissions": []string{"tenant:read", "plugins:read"}})
	rm.want(200, "PUT", ten+"/roles/readers", map[string]any{"permissions": []string{"tenant:read"}})
	rm.want(204, "DELETE", ten+"/roles/readers", nil)
}

// rolePerms returns a role's permissions as "object:action" strings.
func rolePerms(t *testing.T, c client, ten, role string) []string {
	t.Helper()
	r := c.want(200, "GET", ten+"/roles", nil)
	for _, it := range r.json(t)["items"].([]any) {
		it := it.(map[string]any)
		if it["name"] != role {
			continue
		}
		var out []string
		for _, p := range it["permissions"].([]any) {
			p := p.(map[string]any)
			out = append(out, p["object"].(string)+":"+p["action"].(string))
		}
		return out
	}
	t.Fatalf("no role %s: %s", role, r.Body)
	return nil
}

// memberRole returns a member's role ("" if not a member).
func memberRole(t *testing.T, c client, ten, userID string) string {
	t.Helper()
	r := c.want(200, "GET", ten+"/members", nil)
	for _, m := range r.json(t)["items"].([]any) {
		if m := m.(map[string]any); m["user_id"] == userID {
			return m["role"].(string)
		}
	}
	return ""
}
