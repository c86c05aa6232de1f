package main

import (
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
