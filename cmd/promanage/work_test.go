package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// The outbox worker claims every due delivery of its database. The work
// tests run a server and workers on a database of their own
// (promanage_test_work_e2e), so their workers never take deliveries that
// other tests' servers leave pending, and vice versa.
var (
	workDBOnce sync.Once
	workDBURL  string
	workDB     *gorm.DB
	workDBErr  error
)

func isolatedWorkDB(t *testing.T) (string, *gorm.DB) {
	t.Helper()
	shared := testenv.DB(t)
	workDBOnce.Do(func() {
		const name = "promanage_test_work_e2e"
		var exists bool
		if workDBErr = shared.Raw("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = ?)", name).Scan(&exists).Error; workDBErr != nil {
			return
		}
		if !exists {
			if err := shared.Exec("CREATE DATABASE " + name).Error; err != nil {
				shared.Raw("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = ?)", name).Scan(&exists)
				if !exists {
					workDBErr = err
					return
				}
			}
		}
		u, err := url.Parse(testenv.DatabaseURL())
		if err != nil {
			workDBErr = err
			return
		}
		u.Path = "/" + name
		workDBURL = u.String()
		ctx := context.Background()
		if workDB, workDBErr = tenant.OpenDB(ctx, workDBURL, nil); workDBErr == nil {
			workDBErr = tenant.MigratePublic(ctx, workDB)
		}
	})
	if workDBErr != nil {
		t.Fatalf("work test database: %v", workDBErr)
	}
	return workDBURL, workDB
}

// eventRecorder is the "notifications" consumer of a test worker: it counts
// deliveries of one tenant by idempotency key.
type eventRecorder struct {
	tenant uuid.UUID
	mu     sync.Mutex
	keys   map[string]int
	types  map[string]string // event id -> type
}

func (r *eventRecorder) Handle(ctx context.Context, d core.Delivery) error {
	if d.TenantID != r.tenant {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[d.Key]++
	r.types[d.Event.ID.String()] = d.Event.Type
	return nil
}

func (r *eventRecorder) counts() (map[string]int, map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ty := map[string]int{}, map[string]string{}
	for a, b := range r.keys {
		k[a] = b
	}
	for a, b := range r.types {
		ty[a] = b
	}
	return k, ty
}

func testWorker(db *gorm.DB, dbURL string, rec *eventRecorder) *core.OutboxWorker {
	return &core.OutboxWorker{DB: db, ListenURL: dbURL, Poll: 100 * time.Millisecond,
		Consumers: map[string]core.Consumer{"notifications": rec}}
}

func items(t *testing.T, r response) []map[string]any {
	t.Helper()
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		t.Fatalf("not a page: %s", r.Body)
	}
	return page.Items
}

func day(offset int) string { return time.Now().UTC().AddDate(0, 0, offset).Format("2006-01-02") }

// A project run as users with curl would: tasks through their workflow,
// milestones, expenses across the 80 % threshold, the budget report, roles,
// tenant isolation, the events API and replay.
func TestWorkProjectEndToEnd(t *testing.T) {
	dbURL, db := isolatedWorkDB(t)
	base := server(t, "-database-url", dbURL)
	aliceU, bobU, carolU, malloryU := testenv.SignUp(t, "alice"), testenv.SignUp(t, "bob"), testenv.SignUp(t, "carol"), testenv.SignUp(t, "mallory")
	alice, bob, carol, mallory := client{t, base, aliceU.Token}, client{t, base, bobU.Token}, client{t, base, carolU.Token}, client{t, base, malloryU.Token}
	for _, c := range []client{bob, carol, mallory} {
		c.want(200, "GET", "/v1/me", nil)
	}
	a, m := testenv.Slug("work"), testenv.Slug("rival")
	r := alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": a, "name": "Acme"})
	tenantID := uuid.MustParse(r.json(t)["id"].(string))
	mallory.want(201, "POST", "/v1/tenants", map[string]string{"slug": m, "name": "Rival"})
	alice.want(201, "PUT", "/v1/tenants/"+a+"/members/"+bobU.ID.String(), map[string]string{"role": "viewer"})
	alice.want(201, "PUT", "/v1/tenants/"+a+"/members/"+carolU.ID.String(), map[string]string{"role": "member"})

	// 1 000.00 EUR, started 9 days ago, due in 20 days.
	r = alice.want(201, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "WEB", "name": "Website", "status": "active",
		"start_date": day(-9), "deadline": day(20), "budget": map[string]any{"amount_minor": 100000, "currency": "EUR"}})
	pid := r.json(t)["id"].(string)
	pp := "/v1/tenants/" + a + "/projects/" + pid

	// Tasks: viewers cannot create, members can; assignees must be members.
	bob.want(403, "POST", pp+"/tasks", map[string]any{"title": "viewer task"})
	r = carol.want(422, "POST", pp+"/tasks", map[string]any{"title": "t", "assignee_id": malloryU.ID.String()})
	if r.json(t)["errors"].([]any)[0].(map[string]any)["field"] != "assignee_id" {
		t.Fatalf("assignee error: %s", r.Body)
	}
	r = carol.want(201, "POST", pp+"/tasks", map[string]any{"title": "Write copy", "assignee_id": carolU.ID.String(), "due_date": day(5)})
	task := r.json(t)
	tp := pp + "/tasks/" + task["id"].(string)
	carol.want(201, "POST", pp+"/tasks", map[string]any{"title": "Launch party", "due_date": day(-1)})
	carol.want(422, "PATCH", tp, map[string]any{"status": "done"}, "If-Match", task["etag"].(string)) // todo -> done
	carol.want(428, "PATCH", tp, map[string]any{"status": "in_progress"})
	r = carol.want(200, "PATCH", tp, map[string]any{"status": "in_progress"}, "If-Match", task["etag"].(string))
	carol.want(412, "PATCH", tp, map[string]any{"status": "done"}, "If-Match", task["etag"].(string))
	r = carol.want(200, "PATCH", tp, map[string]any{"status": "done"}, "If-Match", r.Header.Get("ETag"))
	if r.json(t)["status"] != "done" || r.json(t)["done_at"] == nil {
		t.Fatalf("done task: %s", r.Body)
	}
	carol.want(200, "GET", tp, nil)
	bob.want(200, "GET", tp, nil)
	if got := items(t, carol.want(200, "GET", pp+"/tasks?overdue=true", nil)); len(got) != 1 || got[0]["title"] != "Launch party" {
		t.Fatalf("overdue tasks: %v", got)
	}
	if got := items(t, carol.want(200, "GET", pp+"/tasks?q=copy&status=done&assignee="+carolU.ID.String(), nil)); len(got) != 1 {
		t.Fatalf("filtered tasks: %v", got)
	}
	carol.want(422, "GET", pp+"/tasks?status=finished", nil)
	carol.want(403, "DELETE", tp, nil) // deleting tasks is for managers

	// Milestones (managers).
	carol.want(403, "POST", pp+"/milestones", map[string]any{"name": "Beta"})
	r = alice.want(201, "POST", pp+"/milestones", map[string]any{"name": "Beta", "due_date": day(3)})
	ms := r.json(t)
	alice.want(201, "POST", pp+"/milestones", map[string]any{"name": "Launch", "due_date": day(20)})
	mp := pp + "/milestones/" + ms["id"].(string)
	alice.want(200, "PATCH", mp, map[string]any{"done": true}, "If-Match", ms["etag"].(string))
	if got := items(t, bob.want(200, "GET", pp+"/milestones", nil)); len(got) != 2 || got[0]["done"] != true {
		t.Fatalf("milestones: %v", got)
	}

	// Expenses: 300 + 250 = 55 %, then 300 more crosses 80 %.
	carol.want(422, "POST", pp+"/expenses", map[string]any{"amount_minor": 100, "currency": "USD", "spent_on": day(0)})
	carol.want(422, "POST", pp+"/expenses", map[string]any{"amount_minor": 100, "currency": "EUR", "spent_on": day(3)})
	carol.want(422, "POST", pp+"/expenses", map[string]any{"amount_minor": 0, "currency": "EUR", "spent_on": day(0)})
	carol.want(422, "POST", pp+"/expenses", map[string]any{"amount_minor": 1.5, "currency": "EUR", "spent_on": day(0)})
	bob.want(403, "POST", pp+"/expenses", map[string]any{"amount_minor": 100, "currency": "EUR", "spent_on": day(0)})
	carol.want(201, "POST", pp+"/expenses", map[string]any{"amount_minor": 30000, "currency": "EUR", "spent_on": day(-9), "category": "design"})
	carol.want(201, "POST", pp+"/expenses", map[string]any{"amount_minor": 25000, "currency": "EUR", "spent_on": day(-1), "category": "hosting"})
	r = carol.want(201, "POST", pp+"/expenses", map[string]any{"amount_minor": 30000, "currency": "EUR", "spent_on": day(0), "category": "design"})
	expense := r.json(t)
	if got := items(t, bob.want(200, "GET", pp+"/expenses?category=design", nil)); len(got) != 2 {
		t.Fatalf("expenses by category: %v", got)
	}
	if got := items(t, bob.want(200, "GET", pp+"/expenses?spent_from="+day(-2)+"&spent_to="+day(-1), nil)); len(got) != 1 {
		t.Fatalf("expenses by date: %v", got)
	}

	// The project view: progress and budget summary.
	p := bob.want(200, "GET", pp, nil).json(t)
	prog, bs := p["progress"].(map[string]any), p["budget_summary"].(map[string]any)
	if prog["tasks_total"] != 2.0 || prog["tasks_done"] != 1.0 || prog["percent"] != 50.0 || prog["milestones_total"] != 2.0 || prog["milestones_met"] != 1.0 {
		t.Fatalf("progress: %v", prog)
	}
	if bs["spent"] != 85000.0 || bs["remaining"] != 15000.0 {
		t.Fatalf("budget summary: %v", bs)
	}
	// Burn since start (10 days, both ends): 8 500/day; forecast 85 000 + 8 500*20 = 255 000 > 100 000.
	b := bob.want(200, "GET", pp+"/budget", nil).json(t)
	if b["spent"] != 85000.0 || b["remaining"] != 15000.0 || b["burn_days"] != 10.0 || b["burn_rate_per_day"] != 8500.0 ||
		b["days_remaining"] != 20.0 || b["forecast_at_deadline"] != 255000.0 || b["at_risk"] != true {
		t.Fatalf("budget: %v", b)
	}
	if months := b["by_month"].([]any); len(months) == 0 {
		t.Fatalf("by_month: %v", b)
	}

	// Exactly one budget.threshold_crossed for 80 %.
	evs := items(t, bob.want(200, "GET", "/v1/tenants/"+a+"/events?type=budget.threshold_crossed", nil))
	var eighty []map[string]any
	for _, e := range evs {
		if e["data"].(map[string]any)["threshold_percent"] == 80.0 {
			eighty = append(eighty, e)
		}
	}
	if len(evs) != 2 || len(eighty) != 1 {
		t.Fatalf("threshold events: %v", evs)
	}
	bob.want(422, "GET", "/v1/tenants/"+a+"/events?state=lost", nil)

	// Managers delete expenses; spending drops.
	carol.want(403, "DELETE", pp+"/expenses/"+expense["id"].(string), nil)
	alice.want(204, "DELETE", pp+"/expenses/"+expense["id"].(string), nil)
	if b := bob.want(200, "GET", pp+"/budget", nil).json(t); b["spent"] != 55000.0 {
		t.Fatalf("spent after delete: %v", b)
	}

	// Another tenant's member gets 404 on every nested route with real ids.
	taskBody := map[string]any{"title": "x"}
	msBody := map[string]any{"name": "x"}
	expBody := map[string]any{"amount_minor": 1, "currency": "EUR", "spent_on": day(0)}
	mine := "/v1/tenants/" + m + "/projects/" + pid
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"GET", pp + "/tasks", nil}, {"POST", pp + "/tasks", taskBody}, {"GET", tp, nil}, {"PATCH", tp, taskBody}, {"DELETE", tp, nil},
		{"GET", pp + "/milestones", nil}, {"POST", pp + "/milestones", msBody}, {"GET", mp, nil}, {"PATCH", mp, msBody}, {"DELETE", mp, nil},
		{"GET", pp + "/expenses", nil}, {"POST", pp + "/expenses", expBody}, {"DELETE", pp + "/expenses/" + expense["id"].(string), nil},
		{"GET", pp + "/budget", nil}, {"GET", "/v1/tenants/" + a + "/events", nil},
		// A's ids through mallory's own tenant, where she may do everything.
		{"GET", mine + "/tasks", nil}, {"POST", mine + "/tasks", taskBody}, {"GET", mine + "/tasks/" + task["id"].(string), nil},
		{"PATCH", mine + "/tasks/" + task["id"].(string), taskBody}, {"DELETE", mine + "/tasks/" + task["id"].(string), nil},
		{"GET", mine + "/milestones", nil}, {"POST", mine + "/milestones", msBody}, {"GET", mine + "/milestones/" + ms["id"].(string), nil},
		{"PATCH", mine + "/milestones/" + ms["id"].(string), msBody}, {"DELETE", mine + "/milestones/" + ms["id"].(string), nil},
		{"GET", mine + "/expenses", nil}, {"POST", mine + "/expenses", expBody}, {"DELETE", mine + "/expenses/" + expense["id"].(string), nil},
		{"GET", mine + "/budget", nil},
	} {
		r := mallory.do(tc.method, tc.path, tc.body, "If-Match", `"2"`)
		if r.Status != http.StatusNotFound {
			t.Errorf("mallory %s %s: %d, want 404: %s", tc.method, tc.path, r.Status, r.Body)
		}
	}
	// A deleted project is gone from every nested route too.
	r = alice.want(201, "POST", "/v1/tenants/"+a+"/projects", map[string]any{"key": "TMP", "name": "Temp"})
	gone := "/v1/tenants/" + a + "/projects/" + r.json(t)["id"].(string)
	alice.want(204, "DELETE", gone, nil)
	for _, path := range []string{gone + "/tasks", gone + "/milestones", gone + "/expenses", gone + "/budget"} {
		alice.want(404, "GET", path, nil)
	}

	// A worker delivers the events; the events API shows it; replay re-queues.
	rec := &eventRecorder{tenant: tenantID, keys: map[string]int{}, types: map[string]string{}}
	w := testWorker(db, dbURL, rec)
	for {
		n, err := w.ProcessOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	delivered := items(t, bob.want(200, "GET", "/v1/tenants/"+a+"/events?state=delivered&type=task.done", nil))
	if len(delivered) != 1 {
		t.Fatalf("delivered task.done events: %v", delivered)
	}
	ev := delivered[0]
	d := ev["deliveries"].([]any)[0].(map[string]any)
	if d["consumer"] != "notifications" || d["state"] != "delivered" || d["attempts"] != 1.0 {
		t.Fatalf("delivery state: %v", d)
	}
	replay := "/v1/tenants/" + a + "/events/" + ev["id"].(string) + "/replay"
	carol.want(403, "POST", replay, nil)
	mallory.want(404, "POST", replay, nil)
	r = alice.want(200, "POST", replay, nil)
	if r.json(t)["requeued"] != 1.0 {
		t.Fatalf("replay: %s", r.Body)
	}
	if got := items(t, bob.want(200, "GET", "/v1/tenants/"+a+"/events?state=pending&type=task.done", nil)); len(got) != 1 {
		t.Fatalf("replayed event not pending: %v", got)
	}
	if _, err := w.ProcessOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, _ := rec.counts()
	if keys[ev["id"].(string)+":notifications"] != 2 {
		t.Fatalf("replayed event delivered %d times in all, want 2", keys[ev["id"].(string)+":notifications"])
	}
	audit := items(t, alice.want(200, "GET", "/v1/tenants/"+a+"/audit?action=event.replay", nil))
	if len(audit) != 1 {
		t.Fatalf("replay audit: %v", audit)
	}
}

// Stopping the worker, making changes and starting it again delivers every
// event exactly once.
func TestWorkerRestartDeliversEveryEvent(t *testing.T) {
	dbURL, db := isolatedWorkDB(t)
	base := server(t, "-database-url", dbURL)
	u := testenv.SignUp(t, "ops")
	c := client{t, base, u.Token}
	slug := testenv.Slug("restart")
	r := c.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Restart"})
	tenantID := uuid.MustParse(r.json(t)["id"].(string))
	rec := &eventRecorder{tenant: tenantID, keys: map[string]int{}, types: map[string]string{}}

	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); testWorker(db, dbURL, rec).Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stop := run()
	r = c.want(201, "POST", "/v1/tenants/"+slug+"/projects", map[string]any{"key": "RS", "name": "Restart",
		"budget": map[string]any{"amount_minor": 1000, "currency": "EUR"}})
	pp := "/v1/tenants/" + slug + "/projects/" + r.json(t)["id"].(string)
	waitDelivered(t, db, tenantID)
	stop()

	// Changes while no worker runs.
	for i := range 5 {
		c.want(201, "POST", pp+"/expenses", map[string]any{"amount_minor": 200, "currency": "EUR", "spent_on": day(0), "note": fmt.Sprint(i)})
	}
	task := c.want(201, "POST", pp+"/tasks", map[string]any{"title": "t"}).json(t)
	r = c.want(200, "PATCH", pp+"/tasks/"+task["id"].(string), map[string]any{"status": "in_progress"}, "If-Match", task["etag"].(string))
	c.want(200, "PATCH", pp+"/tasks/"+task["id"].(string), map[string]any{"status": "done"}, "If-Match", r.Header.Get("ETag"))
	var pending int64
	db.Raw(`SELECT count(*) FROM public.outbox_deliveries d JOIN public.outbox o ON o.id = d.event_id
		WHERE o.tenant_id = ? AND d.state = 'pending'`, tenantID).Scan(&pending)
	if pending < 9 { // 5 expense.recorded, 3 thresholds, 1 task.done
		t.Fatalf("%d pending deliveries while the worker is down", pending)
	}

	stop = run()
	defer stop()
	waitDelivered(t, db, tenantID)
	var all []struct{ ID uuid.UUID }
	db.Raw("SELECT id FROM public.outbox WHERE tenant_id = ?", tenantID).Scan(&all)
	keys, types := rec.counts()
	for _, e := range all {
		if keys[e.ID.String()+":notifications"] != 1 {
			t.Errorf("event %s (%s) delivered %d times", e.ID, types[e.ID.String()], keys[e.ID.String()+":notifications"])
		}
	}
	if len(keys) != len(all) {
		t.Errorf("%d deliveries for %d events", len(keys), len(all))
	}
}

func waitDelivered(t *testing.T, db *gorm.DB, tenantID uuid.UUID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var pending int64
		if err := db.Raw(`SELECT count(*) FROM public.outbox_deliveries d JOIN public.outbox o ON o.id = d.event_id
			WHERE o.tenant_id = ? AND d.state <> 'delivered'`, tenantID).Scan(&pending).Error; err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("deliveries still pending after 20s")
}
