package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
)

// Admins set their tenant's own settings through the API; quotas are the
// operator's, through `promanage tenant settings`.
func TestTenantSettings(t *testing.T) {
	base := server(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "settings-owner").Token}
	memberU := testenv.SignUp(t, "settings-member")
	member := client{t: t, base: base, token: memberU.Token}
	member.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("settings")
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	owner.want(201, "PUT", tp+"/members/"+memberU.ID.String(), map[string]string{"role": "member"})
	pid := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "SET", "name": "s"}).json(t)["id"].(string)
	docs := tp + "/projects/" + pid + "/documents"

	member.want(403, "PATCH", tp, map[string]any{"settings": map[string]any{"allowed_content_types": []string{}}})
	owner.want(422, "PATCH", tp, map[string]any{"settings": map[string]any{"quota_bytes": 1}})
	owner.want(422, "PATCH", tp, map[string]any{"settings": map[string]any{"deadline_warning_days": 0}})
	owner.want(422, "PATCH", tp, map[string]any{"settings": map[string]any{"allowed_content_types": []string{"not a type"}}})

	r := owner.want(200, "PATCH", tp, map[string]any{"settings": map[string]any{
		"allowed_content_types": []string{"application/pdf"}, "deadline_warning_days": 14}})
	v := r.json(t)
	if v["settings"].(map[string]any)["deadline_warning_days"] != float64(14) {
		t.Fatalf("settings: %s", r.Body)
	}
	if types := v["storage"].(map[string]any)["allowed_content_types"].([]any); len(types) != 1 || types[0] != "application/pdf" {
		t.Fatalf("allowlist: %s", r.Body)
	}
	member.upload(415, docs, fileOf("notes.txt", []byte("plain text, not a PDF")))
	member.upload(201, docs, fileOf("spec.pdf", []byte("%PDF-1.4\n%...")))

	// The operator lowers the quota below what is stored: the next upload is refused.
	out := runCLI(t, "tenant", "settings", "-slug", slug, "-set-quota-bytes", "20", "-set-allowed-types", "")
	if out == "" {
		t.Fatal("no output from tenant settings")
	}
	st := eventuallyStatus(t, owner, 200, "GET", tp).json(t)["storage"].(map[string]any)
	if st["quota_bytes"] != float64(20) || st["allowed_content_types"] != nil && len(st["allowed_content_types"].([]any)) != 0 {
		t.Fatalf("storage after the operator's change: %v", st)
	}
	r = member.upload(413, docs, fileOf("more.txt", []byte("this no longer fits in the quota")))
	if r.json(t)["code"] != "quota_exceeded" {
		t.Fatalf("over quota: %s", r.Body)
	}
	r = owner.want(200, "GET", tp+"/audit?action=tenant.settings", nil)
	if len(r.json(t)["items"].([]any)) != 1 {
		t.Fatalf("settings change not audited: %s", r.Body)
	}
}

// A PATCH with a bad setting changes nothing (not even the name), and an
// admin's allowlist change never writes back a quota the operator changed
// while it ran.
func TestTenantSettingsPatchIsAllOrNothingAndKeepsOperatorQuota(t *testing.T) {
	base := server(t)
	owner := client{t: t, base: base, token: testenv.SignUp(t, "settings-race").Token}
	slug := testenv.Slug("setrace")
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Before"})

	owner.want(422, "PATCH", tp, map[string]any{"name": "After", "settings": map[string]any{"deadline_warning_days": 0}})
	owner.want(422, "PATCH", tp, map[string]any{"name": "After", "settings": map[string]any{"allowed_content_types": []string{"nope"}}})
	if name := owner.want(200, "GET", tp, nil).json(t)["name"]; name != "Before" {
		t.Fatalf("name after refused PATCHes = %v, want Before", name)
	}

	// The operator's change holds the tenant's row while the admin's PATCH
	// runs; it sets the quota and commits once the PATCH waits for the row.
	db := testenv.DB(t)
	op := db.Begin()
	defer op.Rollback()
	if err := op.Exec("SELECT 1 FROM public.tenants WHERE slug = ? FOR UPDATE", slug).Error; err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int64
			if err := db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
				AND wait_event_type = 'Lock' AND query LIKE '%public.tenants%'`).Scan(&n).Error; err != nil {
				done <- err
				return
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				break // the PATCH did not wait: commit anyway, the check below decides
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := op.Exec(`UPDATE public.tenants SET settings = jsonb_set(settings, '{storage}',
			coalesce(settings->'storage', '{}') || '{"quota_bytes": 12345}') WHERE slug = ?`, slug).Error; err != nil {
			done <- err
			return
		}
		done <- op.Commit().Error
	}()
	owner.want(200, "PATCH", tp, map[string]any{"settings": map[string]any{"allowed_content_types": []string{"application/pdf"}}})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var storage string
	if err := db.Raw("SELECT settings->'storage' FROM public.tenants WHERE slug = ?", slug).Scan(&storage).Error; err != nil {
		t.Fatal(err)
	}
	var st struct {
		Quota int64    `json:"quota_bytes"`
		Types []string `json:"allowed_content_types"`
	}
	if err := json.Unmarshal([]byte(storage), &st); err != nil {
		t.Fatal(err)
	}
	if st.Quota != 12345 || len(st.Types) != 1 {
		t.Fatalf("storage settings = %s, want the operator's quota 12345 and the admin's allowlist", storage)
	}
}
