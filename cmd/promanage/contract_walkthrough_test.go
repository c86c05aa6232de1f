package main

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/promanage/promanage/internal/testenv"
)

// One tour of the whole API as an integrator would take it: every operation
// of the document answers its happy path, and each area its main errors (not
// signed in, outside the tenant, a role that may not, bad input, stale
// ETag, missing If-Match, conflicts). The requests assert the status a
// client relies on; the contract checker (contract_test.go) checks every
// answer against the document, body and headers included.
func TestAPIContractWalkthrough(t *testing.T) {
	hookKey := testHookKey(t)
	base := server(t, "-blob-url", "mem://", "-secret-key", testSecretKey, "-hook-api-key", hookKey)
	ownerUser := testenv.SignUp(t, "tour")
	owner := client{t: t, base: base, token: ownerUser.Token}
	viewerUser := testenv.SignUp(t, "tourview")
	viewer := client{t: t, base: base, token: viewerUser.Token}
	outsider := client{t: t, base: base, token: testenv.SignUp(t, "tourout").Token}
	anon := client{t: t, base: base}

	// Platform and identity.
	anon.want(200, "GET", "/healthz", nil)
	anon.want(200, "GET", "/readyz", nil)
	anon.want(404, "GET", "/metrics", nil) // metrics are on their own listener
	anon.want(200, "GET", "/openapi.json", nil)
	anon.want(401, "GET", "/v1/me", nil)
	anon.want(404, "GET", "/v1/no-such-route", nil)
	anon.want(405, "PUT", "/healthz", nil)
	owner.want(200, "GET", "/v1/me", nil)
	viewer.want(200, "GET", "/v1/me", nil) // recorded as a user, so it can be made a member

	// Tenants.
	slug := testenv.Slug("tour")
	ten := "/v1/tenants/" + slug
	owner.want(422, "POST", "/v1/tenants", map[string]string{"slug": "No Such Slug"})
	owner.want(415, "POST", "/v1/tenants", "slug=x", "Content-Type", "application/x-www-form-urlencoded")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Tour"}, "Idempotency-Key", uuid.NewString())
	owner.want(409, "POST", "/v1/tenants", map[string]string{"slug": slug})
	owner.want(200, "GET", "/v1/tenants", nil)
	owner.want(200, "GET", ten, nil)
	owner.want(200, "PATCH", ten, map[string]any{"name": "Tour Ltd", "settings": map[string]any{"deadline_warning_days": 5}})
	owner.want(422, "PATCH", ten, map[string]any{"settings": map[string]any{"deadline_warning_days": 0}})
	outsider.want(404, "GET", ten, nil)

	// Members and roles.
	members := ten + "/members/"
	owner.want(201, "PUT", members+viewerUser.ID.String(), map[string]string{"role": "member"})
	owner.want(200, "PUT", members+viewerUser.ID.String(), map[string]string{"role": "viewer"})
	owner.want(422, "PUT", members+viewerUser.ID.String(), map[string]string{"role": "emperor"})
	owner.want(404, "PUT", members+uuid.NewString(), map[string]string{"role": "viewer"})
	owner.want(409, "DELETE", members+ownerUser.ID.String(), nil)
	owner.want(200, "GET", ten+"/members", nil)
	viewer.want(403, "PUT", members+viewerUser.ID.String(), map[string]string{"role": "admin"})
	owner.want(200, "GET", ten+"/roles", nil)
	owner.want(201, "PUT", ten+"/roles/auditor", map[string]any{"permissions": []any{"projects:read", map[string]string{"object": "audit", "action": "read"}}})
	owner.want(200, "PUT", ten+"/roles/auditor", map[string]any{"permissions": []string{"projects:read"}})
	owner.want(409, "PUT", ten+"/roles/viewer", map[string]any{"permissions": []string{"projects:read"}})
	owner.want(422, "PUT", ten+"/roles/auditor", map[string]any{"permissions": []string{"tenant:delete"}})
	owner.want(204, "DELETE", ten+"/roles/auditor", nil)
	owner.want(404, "DELETE", ten+"/roles/auditor", nil)

	// Projects.
	projects := ten + "/projects"
	body := map[string]any{"key": "WEB", "name": "Website relaunch", "description": "New site", "status": "active",
		"start_date": day(-30), "deadline": day(60), "budget": map[string]any{"amount_minor": 1_000_000, "currency": "EUR"}}
	r := owner.want(201, "POST", projects, body)
	project := projects + "/" + r.json(t)["id"].(string)
	etag := r.Header.Get("ETag")
	owner.want(409, "POST", projects, body)
	owner.want(422, "POST", projects, map[string]any{"key": "WEB2", "name": "", "deadline": "soon"})
	viewer.want(403, "POST", projects, map[string]any{"key": "VIEW", "name": "Viewer's"})
	owner.want(200, "GET", projects+"?status=active&q=website&limit=10", nil)
	owner.want(422, "GET", projects+"?limit=1000", nil)
	owner.want(200, "GET", project, nil)
	owner.want(428, "PATCH", project, map[string]any{"name": "Renamed"})
	owner.want(412, "PATCH", project, map[string]any{"name": "Renamed"}, "If-Match", `"999"`)
	owner.want(200, "PATCH", project, map[string]any{"name": "Renamed", "deadline": nil}, "If-Match", etag)
	outsider.want(404, "GET", project, nil)

	// Tasks.
	r = owner.want(201, "POST", project+"/tasks", map[string]any{"title": "Sitemap", "assignee_id": viewerUser.ID, "due_date": day(7)})
	task := project + "/tasks/" + r.json(t)["id"].(string)
	owner.want(422, "POST", project+"/tasks", map[string]any{"title": "Done already", "status": "done"})
	owner.want(200, "GET", project+"/tasks?status=todo", nil)
	r = owner.want(200, "GET", task, nil)
	owner.want(422, "PATCH", task, map[string]any{"status": "done"}, "If-Match", r.Header.Get("ETag"))
	owner.want(200, "PATCH", task, map[string]any{"status": "in_progress", "assignee_id": nil}, "If-Match", r.Header.Get("ETag"))
	viewer.want(403, "DELETE", task, nil)
	owner.want(204, "DELETE", task, nil)
	owner.want(404, "GET", task, nil)

	// Milestones.
	r = owner.want(201, "POST", project+"/milestones", map[string]any{"name": "Beta", "due_date": day(30)})
	milestone := project + "/milestones/" + r.json(t)["id"].(string)
	owner.want(422, "POST", project+"/milestones", map[string]any{"name": ""})
	owner.want(200, "GET", project+"/milestones", nil)
	r = owner.want(200, "GET", milestone, nil)
	owner.want(428, "PATCH", milestone, map[string]any{"done": true})
	owner.want(200, "PATCH", milestone, map[string]any{"done": true, "due_date": nil}, "If-Match", r.Header.Get("ETag"))
	owner.want(204, "DELETE", milestone, nil)

	// Expenses and budget.
	r = owner.want(201, "POST", project+"/expenses", map[string]any{"amount_minor": 600_000, "currency": "EUR", "category": "travel", "spent_on": day(-1)})
	expense := project + "/expenses/" + r.json(t)["id"].(string)
	owner.want(422, "POST", project+"/expenses", map[string]any{"amount_minor": 10, "currency": "USD", "spent_on": day(-1)})
	owner.want(201, "POST", project+"/expenses", map[string]any{"amount_minor": 1_000, "currency": "EUR", "spent_on": day(-2), "note": "taxi"})
	owner.want(200, "GET", project+"/expenses?category=travel", nil)
	owner.want(200, "GET", project+"/budget", nil)
	viewer.want(403, "DELETE", expense, nil)
	owner.want(204, "DELETE", expense, nil)
	owner.want(404, "GET", projects+"/"+uuid.NewString()+"/budget", nil)

	// Events and audit.
	r = owner.want(200, "GET", ten+"/events?limit=5", nil)
	items := r.json(t)["items"].([]any)
	if len(items) == 0 {
		t.Fatal("no events")
	}
	owner.want(200, "POST", ten+"/events/"+items[0].(map[string]any)["id"].(string)+"/replay", nil, "Idempotency-Key", uuid.NewString())
	owner.want(404, "POST", ten+"/events/"+uuid.NewString()+"/replay", nil)
	viewer.want(403, "POST", ten+"/events/"+items[0].(map[string]any)["id"].(string)+"/replay", nil)
	owner.want(422, "GET", ten+"/events?state=lost", nil)
	owner.want(200, "GET", ten+"/audit?outcome=denied", nil)
	owner.want(422, "GET", ten+"/audit?actor=someone", nil)
	viewer.want(403, "GET", ten+"/audit", nil)

	// Documents.
	docs := project + "/documents"
	content := []byte("%PDF-1.4\n" + strings.Repeat("plan ", 400))
	r = owner.upload(201, docs, formPart{name: "title", body: []byte("Plan")},
		formPart{name: "metadata", body: []byte(`{"client":"Acme"}`)}, fileOf("plan.pdf", content))
	doc := ten + "/documents/" + r.json(t)["id"].(string)
	owner.upload(422, docs, fileOf("a.txt", []byte("a")), formPart{name: "title", body: []byte("after the file")})
	owner.want(415, "POST", docs, map[string]string{"file": "not multipart"})
	owner.want(200, "GET", docs, nil)
	r = owner.want(200, "GET", doc, nil)
	owner.want(200, "PATCH", doc, map[string]any{"title": "Plan v1", "metadata": map[string]any{"signed": false}}, "If-Match", r.Header.Get("ETag"))
	owner.want(412, "PATCH", doc, map[string]any{"title": "Stale"}, "If-Match", r.Header.Get("ETag"))
	owner.upload(201, doc+"/versions", fileOf("plan-2.pdf", append(content, "v2"...)))
	owner.want(200, "GET", doc+"/versions", nil)
	r = owner.want(200, "GET", doc+"/content?version=1", nil)
	if !bytes.Equal(r.Body, content) {
		t.Fatal("version 1 content differs")
	}
	owner.want(206, "GET", doc+"/content", nil, "Range", "bytes=0-9")
	owner.want(416, "GET", doc+"/content", nil, "Range", "bytes=999999-")
	owner.want(304, "GET", doc+"/content?version=1", nil, "If-None-Match", r.Header.Get("ETag"))
	owner.want(422, "GET", doc+"/content?version=zero", nil)
	owner.want(201, "POST", doc+"/versions/1/restore", nil)
	owner.want(404, "POST", doc+"/versions/99/restore", nil)
	r = owner.want(200, "GET", doc+"/url?expires_in=120", nil)
	signed, err := url.Parse(r.json(t)["url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	anon.want(200, "GET", signed.RequestURI(), nil)
	anon.want(206, "GET", signed.RequestURI(), nil, "Range", "bytes=-4")
	q := signed.Query()
	q.Set("sig", strings.Repeat("0", len(q.Get("sig"))))
	anon.want(403, "GET", signed.Path+"?"+q.Encode(), nil)
	owner.want(422, "GET", doc+"/url?expires_in=5", nil)
	viewer.want(403, "DELETE", doc, nil)
	owner.want(204, "DELETE", doc, nil)
	owner.want(404, "GET", doc, nil)

	// Plugins.
	guard := pluginFile(t, "examples/plugins/budget-guard/budget-guard.wasm")
	manifest := map[string]any{"name": "budget-guard", "hooks": []string{"project.validate", "expense.validate"},
		"config": map[string]any{"max_budget_minor": 5_000_000}}
	if r := owner.uploadPlugin(guard, manifest, slug); r.Status != 201 {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	} else {
		plugin := ten + "/plugins/" + r.json(t)["id"].(string)
		owner.want(422, "POST", projects, projectBody("HUGE", 6_000_000)) // plugin_rejected
		owner.want(200, "GET", ten+"/plugins", nil)
		r = owner.want(200, "GET", plugin, nil)
		owner.want(428, "PATCH", plugin, map[string]any{"enabled": false})
		owner.want(200, "PATCH", plugin, map[string]any{"enabled": false, "priority": 5}, "If-Match", r.Header.Get("ETag"))
		owner.want(200, "POST", plugin+"/test", map[string]any{"hook": "project.validate", "event": projectBody("HUGE", 6_000_000)})
		owner.want(422, "POST", plugin+"/test", map[string]any{"hook": "task.done"})
		waitFor(t, 5*time.Second, func() error {
			if n := len(owner.want(200, "GET", plugin+"/invocations", nil).json(t)["items"].([]any)); n == 0 {
				return errNoInvocation
			}
			return nil
		})
		owner.want(200, "GET", plugin+"/deliveries?limit=5", nil)
		viewer.want(403, "DELETE", plugin, nil)
		owner.want(204, "DELETE", plugin, nil)
		owner.want(404, "GET", plugin, nil)
	}
	if r := owner.uploadPlugin([]byte("not wasm"), manifest, slug); r.Status != 422 {
		t.Fatalf("a bad module: %d %s", r.Status, r.Body)
	}

	// The Kratos web hook.
	hook := map[string]any{"identity_id": uuid.New(), "updated_at": time.Now().UTC().Format(time.RFC3339Nano),
		"traits": map[string]any{"email": "tour-hook@example.com", "name": "Hook"}}
	anon.want(401, "POST", "/v1/hooks/kratos/registration", hook)
	anon.want(200, "POST", "/v1/hooks/kratos/registration", hook, "X-Hook-Key", hookKey)

	// The end of a tenant.
	viewer.want(403, "DELETE", ten, nil)
	owner.want(204, "DELETE", ten, nil)
	owner.want(404, "GET", ten, nil)
}

var errNoInvocation = errors.New("no invocation recorded yet")
