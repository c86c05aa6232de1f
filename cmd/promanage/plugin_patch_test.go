package main

import (
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// A real Wasm validation plugin returning a merge patch normalises the
// project: the patched value is what gets stored.
func TestPluginPatchIsApplied(t *testing.T) {
	base := pluginServer(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "patcher").Token}
	slug := testenv.Slug("patch")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	owner.wantPluginUpload(201, pluginFile(t, "plugins/testdata/patch.wasm"),
		map[string]any{"name": "patcher", "hooks": []string{"project.validate"}, "failure_policy": "fail_closed"}, slug)
	p := owner.want(201, "POST", "/v1/tenants/"+slug+"/projects", map[string]any{"key": "PAT", "name": "n", "description": "raw"}).json(t)
	if p["description"] != "Reviewed by the patch plugin" {
		t.Fatalf("patch not applied on create: %v", p["description"])
	}
	got := owner.want(200, "GET", "/v1/tenants/"+slug+"/projects/"+p["id"].(string), nil).json(t)
	if got["description"] != "Reviewed by the patch plugin" {
		t.Fatalf("stored description: %v", got["description"])
	}
}
