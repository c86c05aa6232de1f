package core_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
)

func fixedClock(s string) func() time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return func() time.Time { return t }
}

func TestExpenseRules(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	s := &core.ExpenseService{DB: db, Now: fixedClock("2030-06-10T12:00:00Z")}
	noBudget := newProject(t, db, sc, owner, core.ProjectInput{Key: "NOB"})
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "EUR", Budget: &core.Money{AmountMinor: 100000, Currency: "EUR"}})
	ok := core.ExpenseInput{AmountMinor: 100, Currency: "EUR", SpentOn: mustDate(t, "2030-06-01")}

	cases := []struct {
		name    string
		project uuid.UUID
		mod     func(*core.ExpenseInput)
		field   string
		msg     string
	}{
		{"NoBudget", noBudget.ID, func(*core.ExpenseInput) {}, "currency", "no budget"},
		{"OtherCurrency", p.ID, func(in *core.ExpenseInput) { in.Currency = "USD" }, "currency", "must be EUR"},
		{"NotACurrency", p.ID, func(in *core.ExpenseInput) { in.Currency = "eur" }, "currency", "ISO 4217"},
		{"Zero", p.ID, func(in *core.ExpenseInput) { in.AmountMinor = 0 }, "amount_minor", "positive"},
		{"Negative", p.ID, func(in *core.ExpenseInput) { in.AmountMinor = -5 }, "amount_minor", "positive"},
		{"Future", p.ID, func(in *core.ExpenseInput) { in.SpentOn = mustDate(t, "2030-06-12") }, "spent_on", "future"},
		{"NoDate", p.ID, func(in *core.ExpenseInput) { in.SpentOn = core.Date{} }, "spent_on", "required"},
		{"LongCategory", p.ID, func(in *core.ExpenseInput) { in.Category = strings.Repeat("c", 65) }, "category", "64"},
		{"LongNote", p.ID, func(in *core.ExpenseInput) { in.Note = strings.Repeat("n", 2001) }, "note", "2000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := ok
			tc.mod(&in)
			_, err := s.Create(ctx, sc, owner, tc.project, in)
			wantCode(t, err, core.EINVALID)
			var e *core.Error
			if !asError(err, &e) || len(e.Fields) == 0 || e.Fields[0].Field != tc.field || !strings.Contains(e.Fields[0].Message, tc.msg) {
				t.Fatalf("error %+v, want field %s with %q", err, tc.field, tc.msg)
			}
		})
	}
	t.Run("OverflowIsRefusedNotRounded", func(t *testing.T) {
		big := newProject(t, db, sc, owner, core.ProjectInput{Key: "BIG", Budget: &core.Money{AmountMinor: math.MaxInt64, Currency: "EUR"}})
		in := ok
		in.AmountMinor = math.MaxInt64 - 10
		if _, err := s.Create(ctx, sc, owner, big.ID, in); err != nil {
			t.Fatal(err)
		}
		in.AmountMinor = 11
		_, err := s.Create(ctx, sc, owner, big.ID, in)
		wantCode(t, err, core.EINVALID)
		in.AmountMinor = 10 // exactly MaxInt64 is fine
		if _, err := s.Create(ctx, sc, owner, big.ID, in); err != nil {
			t.Fatal(err)
		}
		rep, err := (&core.BudgetService{DB: db, Now: s.Now}).Get(ctx, sc, big.ID)
		if err != nil || rep.Spent != math.MaxInt64 || rep.Remaining != 0 {
			t.Fatalf("budget at MaxInt64: %+v %v", rep, err)
		}
	})
	t.Run("CurrencyFixedOnceExpensesExist", func(t *testing.T) {
		if _, err := s.Create(ctx, sc, owner, p.ID, ok); err != nil {
			t.Fatal(err)
		}
		ps := &core.ProjectService{DB: db}
		_, err := ps.Update(ctx, sc, owner, p.ID, 1, core.ProjectUpdate{Budget: &core.Money{AmountMinor: 100000, Currency: "USD"}})
		wantCode(t, err, core.ECONFLICT)
		// The amount may change; a budget below spending leaves remaining negative.
		got, err := ps.Update(ctx, sc, owner, p.ID, 1, core.ProjectUpdate{Budget: &core.Money{AmountMinor: 50, Currency: "EUR"}})
		if err != nil || got.BudgetSummary.Remaining != -50 {
			t.Fatalf("lower budget: %+v %v", got, err)
		}
	})
}

func asError(err error, e **core.Error) bool {
	x, ok := err.(*core.Error)
	if ok {
		*e = x
	}
	return ok
}

func TestBudgetReport(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	clock := fixedClock("2030-03-10T08:00:00Z")
	es := &core.ExpenseService{DB: db, Now: clock}
	bs := &core.BudgetService{DB: db, Now: clock}
	// 100 000.00 EUR from 2030-01-01 to 2030-04-30.
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "BUD", StartDate: mustDate(t, "2030-01-01"), Deadline: mustDate(t, "2030-04-30"),
		Budget: &core.Money{AmountMinor: 10_000_000, Currency: "EUR"}})
	rep, err := bs.Get(ctx, sc, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Spent != 0 || rep.BurnRate != 0 || *rep.Forecast != 0 || rep.AtRisk || len(rep.ByMonth) != 0 {
		t.Fatalf("empty report: %+v", rep)
	}
	var ids []uuid.UUID
	for _, e := range []struct {
		amount int64
		on     string
		cat    string
	}{{2_000_000, "2030-01-15", "travel"}, {1_500_000, "2030-03-01", "hardware"}, {1_450_000, "2030-03-09", "travel"}} {
		x, err := es.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: e.amount, Currency: "EUR", SpentOn: mustDate(t, e.on), Category: e.cat})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, x.ID)
	}
	rep, err = bs.Get(ctx, sc, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	// burn_from 2030-01-01, today 2030-03-10: 31+28+10 = 69 days.
	// burn = 4 950 000 / 69 = 71 739; 51 days left: 4 950 000 + 71 739*51 = 8 608 689.
	want := core.BudgetReport{Planned: 10_000_000, Spent: 4_950_000, Remaining: 5_050_000, BurnDays: 69, BurnRate: 71_739}
	if rep.Planned != want.Planned || rep.Spent != want.Spent || rep.Remaining != want.Remaining || rep.BurnDays != want.BurnDays || rep.BurnRate != want.BurnRate {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	if *rep.DaysLeft != 51 || *rep.Forecast != 8_608_689 || rep.AtRisk {
		t.Fatalf("forecast: days %d forecast %d at_risk %v", *rep.DaysLeft, *rep.Forecast, rep.AtRisk)
	}
	months, _ := json.Marshal(rep.ByMonth)
	if string(months) != `[{"month":"2030-01","spent":2000000},{"month":"2030-02","spent":0},{"month":"2030-03","spent":2950000}]` {
		t.Fatalf("by_month %s", months)
	}
	if len(rep.Thresholds) != 0 {
		t.Fatalf("thresholds %v at 49.5 %%", rep.Thresholds)
	}
	// A big expense puts the forecast over the budget.
	if _, err := es.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 3_000_000, Currency: "EUR", SpentOn: mustDate(t, "2030-03-10")}); err != nil {
		t.Fatal(err)
	}
	rep, _ = bs.Get(ctx, sc, p.ID)
	// 7 950 000 / 69 = 115 217; 7 950 000 + 115 217*51 = 13 826 067 > 10 000 000.
	if rep.BurnRate != 115_217 || *rep.Forecast != 13_826_067 || !rep.AtRisk || len(rep.Thresholds) != 1 {
		t.Fatalf("at risk report: %+v", rep)
	}
	// Deleting an expense changes spent.
	if err := es.Delete(ctx, sc, owner, p.ID, ids[0]); err != nil {
		t.Fatal(err)
	}
	wantCode(t, es.Delete(ctx, sc, owner, p.ID, ids[0]), core.ENOTFOUND)
	rep, _ = bs.Get(ctx, sc, p.ID)
	if rep.Spent != 5_950_000 || rep.ByMonth[0].Month != "2030-03" {
		t.Fatalf("after delete: %+v", rep)
	}
	page, err := es.List(ctx, sc, p.ID, core.ExpenseFilter{Category: "travel"})
	if err != nil || len(page.Items) != 1 || page.Items[0].AmountMinor != 1_450_000 {
		t.Fatalf("category filter: %+v %v", page, err)
	}
	from, to := mustDate(t, "2030-03-02"), mustDate(t, "2030-03-09")
	page, err = es.List(ctx, sc, p.ID, core.ExpenseFilter{SpentFrom: &from, SpentTo: &to})
	if err != nil || len(page.Items) != 1 || page.Items[0].SpentOn.String() != "2030-03-09" {
		t.Fatalf("date filter: %+v %v", page, err)
	}
	proj, _ := (&core.ProjectService{DB: db}).Get(ctx, sc, p.ID)
	if proj.BudgetSummary.Spent != 5_950_000 {
		t.Fatalf("project summary: %+v", proj.BudgetSummary)
	}
}

// thresholdEvents returns the threshold percentages of the tenant's
// budget.threshold_crossed events.
func thresholdEvents(t *testing.T, db *gorm.DB, tenantID uuid.UUID) []int64 {
	t.Helper()
	var payloads []string
	if err := db.Raw("SELECT payload::text FROM public.outbox WHERE tenant_id = ? AND type = ? ORDER BY id", tenantID, core.EventBudgetThreshold).
		Scan(&payloads).Error; err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, p := range payloads {
		var e struct {
			ThresholdPercent int64 `json:"threshold_percent"`
		}
		if err := json.Unmarshal([]byte(p), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.ThresholdPercent)
	}
	return out
}

func TestBudgetThresholdCrossedOnce(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	clock := fixedClock("2030-06-10T12:00:00Z")
	es := &core.ExpenseService{DB: db, Now: clock}
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "THR", Budget: &core.Money{AmountMinor: 10000, Currency: "EUR"}})
	spend := func(amount int64) {
		t.Helper()
		if _, err := es.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: amount, Currency: "EUR", SpentOn: mustDate(t, "2030-06-01")}); err != nil {
			t.Fatal(err)
		}
	}
	spend(4999) // 49.99 %
	if got := thresholdEvents(t, db, tn.ID); len(got) != 0 {
		t.Fatalf("below 50 %%: %v", got)
	}
	spend(1) // exactly 50 %
	spend(2500)
	if got := thresholdEvents(t, db, tn.ID); len(got) != 1 || got[0] != 50 {
		t.Fatalf("at 75 %%: %v", got)
	}
	// Several members record expenses at once, together crossing 80 %.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := es.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 200, Currency: "EUR", SpentOn: mustDate(t, "2030-06-02")}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// 8 300 of 10 000: the scheduler sees the same state and writes nothing.
	sch := &core.Scheduler{DB: db, Now: clock}
	if n, err := sch.TickTenant(ctx, sc, 7); err != nil || n != 0 {
		t.Fatalf("scheduler after the expense path: %d events, %v", n, err)
	}
	got := thresholdEvents(t, db, tn.ID)
	if len(got) != 2 || got[1] != 80 {
		t.Fatalf("thresholds after crossing 80 %%: %v, want [50 80]", got)
	}
	spend(100)
	if got := thresholdEvents(t, db, tn.ID); len(got) != 2 {
		t.Fatalf("a further expense below 100 %% re-fired: %v", got)
	}
}

// Days between dates more than 292 years apart (the range of a
// time.Duration) are counted exactly, not saturated.
func TestBudgetReportFarDates(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "FAR", Status: core.ProjectActive,
		StartDate: mustDate(t, "1700-01-01"), Deadline: mustDate(t, "2400-01-01"),
		Budget: &core.Money{AmountMinor: 1 << 40, Currency: "EUR"}})
	clock := fixedClock("2030-06-10T12:00:00Z")
	exp := &core.ExpenseService{DB: db, Now: clock}
	if _, err := exp.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 1_000_000_000, Currency: "EUR", SpentOn: mustDate(t, "2030-06-01")}); err != nil {
		t.Fatal(err)
	}
	rep, err := (&core.BudgetService{DB: db, Now: clock}).Get(ctx, sc, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	day := func(s string) int64 { return mustDate(t, s).Time().Unix() / 86400 }
	wantBurn := day("2030-06-10") - day("1700-01-01") + 1
	wantLeft := day("2400-01-01") - day("2030-06-10")
	if rep.BurnDays != wantBurn {
		t.Errorf("burn_days = %d, want %d", rep.BurnDays, wantBurn)
	}
	if rep.DaysLeft == nil || *rep.DaysLeft != wantLeft {
		t.Errorf("days_remaining = %v, want %d", deref(rep.DaysLeft), wantLeft)
	}
	if want := 1_000_000_000 / wantBurn; rep.BurnRate != want {
		t.Errorf("burn_rate_per_day = %d, want %d", rep.BurnRate, want)
	}
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
