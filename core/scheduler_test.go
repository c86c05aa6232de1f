package core_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// eventCounts counts the tenant's events by type and subject.
func eventCounts(t *testing.T, db *gorm.DB, tenantID uuid.UUID) map[string]int {
	t.Helper()
	var rows []struct {
		Type      string
		SubjectID string
		N         int
	}
	if err := db.Raw("SELECT type, subject_id, count(*) AS n FROM public.outbox WHERE tenant_id = ? GROUP BY 1, 2", tenantID).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.Type+" "+r.SubjectID] = r.N
	}
	return out
}

// Two schedulers (two worker replicas) tick concurrently against the same
// tenant under a controlled clock: each time-based event is written once.
func TestSchedulerFiresOnceAcrossWorkers(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	var now atomic.Value
	now.Store(time.Date(2030, 6, 1, 9, 0, 0, 0, time.UTC))
	clock := func() time.Time { return now.Load().(time.Time) }

	soon := newProject(t, db, sc, owner, core.ProjectInput{Key: "SOON", Status: "active", Deadline: mustDate(t, "2030-06-05")})
	late := newProject(t, db, sc, owner, core.ProjectInput{Key: "LATE", Status: "active", Deadline: mustDate(t, "2030-05-20")})
	newProject(t, db, sc, owner, core.ProjectInput{Key: "DONE", Status: "completed", Deadline: mustDate(t, "2030-05-20")})
	far := newProject(t, db, sc, owner, core.ProjectInput{Key: "FAR", Status: "active", Deadline: mustDate(t, "2030-07-01")})
	ms := &core.MilestoneService{DB: db}
	mile, err := ms.Create(ctx, sc, owner, far.ID, core.MilestoneInput{Name: "Beta", DueDate: mustDate(t, "2030-06-03")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Create(ctx, sc, owner, far.ID, core.MilestoneInput{Name: "Met", DueDate: mustDate(t, "2030-06-03"), Done: true}); err != nil {
		t.Fatal(err)
	}
	// Spending at 80 % of a budget that was lowered after the expenses: only
	// the scheduler can notice.
	money := newProject(t, db, sc, owner, core.ProjectInput{Key: "MONEY", Budget: &core.Money{AmountMinor: 10000, Currency: "EUR"}})
	es := &core.ExpenseService{DB: db, Now: clock}
	if _, err := es.Create(ctx, sc, owner, money.ID, core.ExpenseInput{AmountMinor: 4000, Currency: "EUR", SpentOn: mustDate(t, "2030-05-30")}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&core.ProjectService{DB: db}).Update(ctx, sc, owner, money.ID, 1, core.ProjectUpdate{Budget: &core.Money{AmountMinor: 5000, Currency: "EUR"}}); err != nil {
		t.Fatal(err)
	}

	mine := func(ctx context.Context) ([]tenant.Tenant, error) { return []tenant.Tenant{*tn}, nil }
	tickBoth := func() int {
		t.Helper()
		var wg sync.WaitGroup
		var total atomic.Int64
		for range 2 {
			s := &core.Scheduler{DB: db, Tenants: mine, Now: clock}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 3 {
					n, err := s.Tick(ctx)
					if err != nil {
						t.Error(err)
					}
					total.Add(int64(n))
				}
			}()
		}
		wg.Wait()
		return int(total.Load())
	}

	if n := tickBoth(); n != 5 {
		t.Errorf("first ticks wrote %d events, want 5", n)
	}
	want := map[string]int{
		core.EventDeadlineApproaching + " " + soon.ID.String(): 1,
		core.EventDeadlineApproaching + " " + mile.ID.String(): 1,
		core.EventProjectOverdue + " " + late.ID.String():      1,
		core.EventBudgetThreshold + " " + money.ID.String():    2, // 50 and 80 % of the new budget
	}
	got := eventCounts(t, db, tn.ID)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %d events, want %d", k, got[k], v)
		}
	}
	if got[core.EventDeadlineApproaching+" "+far.ID.String()] != 0 {
		t.Error("a deadline 30 days away fired")
	}

	// The next day nothing new is due.
	now.Store(time.Date(2030, 6, 2, 9, 0, 0, 0, time.UTC))
	if n := tickBoth(); n != 0 {
		t.Errorf("second day wrote %d events", n)
	}
	// A week before FAR's deadline it approaches; after it, SOON and FAR are overdue.
	now.Store(time.Date(2030, 6, 24, 9, 0, 0, 0, time.UTC))
	if n := tickBoth(); n != 2 { // FAR approaching + SOON overdue
		t.Errorf("June 24 wrote %d events, want 2", n)
	}
	now.Store(time.Date(2030, 7, 2, 9, 0, 0, 0, time.UTC))
	if n := tickBoth(); n != 1 { // FAR overdue
		t.Errorf("July 2 wrote %d events, want 1", n)
	}
	got = eventCounts(t, db, tn.ID)
	if got[core.EventProjectOverdue+" "+far.ID.String()] != 1 || got[core.EventProjectOverdue+" "+soon.ID.String()] != 1 ||
		got[core.EventDeadlineApproaching+" "+far.ID.String()] != 1 {
		t.Errorf("events after July 2: %v", got)
	}
}

// A tenant's setting changes the warning window.
func TestSchedulerTenantWarningDays(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	p := newProject(t, db, tn.Scope(), owner, core.ProjectInput{Key: "WIN", Deadline: mustDate(t, "2030-06-20")})
	tn.Settings = `{"deadline_warning_days": 30}`
	s := &core.Scheduler{DB: db, Now: fixedClock("2030-06-01T00:00:00Z"),
		Tenants: func(context.Context) ([]tenant.Tenant, error) { return []tenant.Tenant{*tn}, nil }}
	if n, err := s.Tick(ctx); err != nil || n != 1 {
		t.Fatalf("tick: %d %v", n, err)
	}
	if eventCounts(t, db, tn.ID)[core.EventDeadlineApproaching+" "+p.ID.String()] != 1 {
		t.Fatal("no deadline.approaching 19 days ahead with a 30-day window")
	}
}
