package core

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// MonthSpend is the spending of one calendar month (YYYY-MM).
type MonthSpend struct {
	Month string `json:"month"`
	Spent int64  `json:"spent"`
}

// BudgetReport is a project's budget as GET .../budget shows it. All amounts
// are int64 minor units of Currency.
//
// Formulas (integer arithmetic; overflow is EINVALID, never rounded):
//
//	remaining          = planned - spent
//	burn_from          = the earlier of start_date and the first expense's spent_on (either may be absent)
//	burn_days          = today - burn_from + 1   (calendar days, both ends included; 0 if burn_from is absent or after today)
//	burn_rate_per_day  = spent / burn_days       (integer division, rounded down; 0 when burn_days is 0)
//	days_remaining     = max(0, deadline - today); 0 once the project is completed or cancelled
//	forecast_at_deadline = spent + burn_rate_per_day * days_remaining   (linear; null without a deadline)
//	at_risk            = forecast_at_deadline > planned (spent > planned without a deadline)
type BudgetReport struct {
	ProjectID  uuid.UUID    `json:"project_id"`
	BudgetSet  bool         `json:"budget_set"`
	Currency   *string      `json:"currency"`
	Planned    int64        `json:"planned"`
	Spent      int64        `json:"spent"`
	Remaining  int64        `json:"remaining"`
	Thresholds []int64      `json:"thresholds_reached"`
	ByMonth    []MonthSpend `json:"by_month"`
	AsOf       Date         `json:"as_of"`
	StartDate  Date         `json:"start_date"`
	Deadline   Date         `json:"deadline"`
	BurnFrom   Date         `json:"burn_from"`
	BurnDays   int64        `json:"burn_days"`
	BurnRate   int64        `json:"burn_rate_per_day"`
	DaysLeft   *int64       `json:"days_remaining"`
	Forecast   *int64       `json:"forecast_at_deadline"`
	AtRisk     bool         `json:"at_risk"`
}

// BudgetService computes budget reports.
type BudgetService struct {
	DB  *gorm.DB
	Now func() time.Time
}

// Get returns the budget report of a live project, in one round trip. It
// returns ENOTFOUND for a missing project and EINVALID when the numbers do
// not fit int64 or the expenses are in more than one currency.
func (s *BudgetService) Get(ctx context.Context, sc tenant.Scope, projectID uuid.UUID) (*BudgetReport, error) {
	live := "e.project_id = p.id AND e.deleted_at IS NULL"
	exp := sc.Table("expenses")
	var rows []struct {
		BudgetMinor  int64      `gorm:"column:budget_minor"`
		Currency     *string    `gorm:"column:currency"`
		Status       string     `gorm:"column:status"`
		StartDate    *time.Time `gorm:"column:start_date"`
		Deadline     *time.Time `gorm:"column:deadline"`
		FirstSpentOn *time.Time `gorm:"column:first_spent_on"`
		Currencies   string     `gorm:"column:currencies"`
		Months       string     `gorm:"column:months"`
	}
	err := s.DB.WithContext(ctx).Raw(`SELECT p.budget_minor, p.currency, p.status, p.start_date, p.deadline,
		(SELECT min(e.spent_on) FROM `+exp+` e WHERE `+live+`) AS first_spent_on,
		(SELECT coalesce(string_agg(DISTINCT e.currency, ','), '') FROM `+exp+` e WHERE `+live+`) AS currencies,
		(SELECT coalesce(string_agg(m.month || '=' || m.spent, ',' ORDER BY m.month), '') FROM
			(SELECT to_char(e.spent_on, 'YYYY-MM') AS month, sum(e.amount_minor)::text AS spent FROM `+exp+` e WHERE `+live+` GROUP BY 1) m) AS months
		FROM `+sc.Table("projects")+` p WHERE p.id = ? AND p.deleted_at IS NULL`, projectID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	r := rows[0]
	rep := &BudgetReport{ProjectID: projectID, BudgetSet: r.Currency != nil, Currency: r.Currency, Planned: r.BudgetMinor,
		AsOf: todayOf(s.Now), StartDate: dateFrom(r.StartDate), Deadline: dateFrom(r.Deadline), Thresholds: []int64{}}
	if r.Currencies != "" {
		cs := strings.Split(r.Currencies, ",")
		if len(cs) > 1 || r.Currency == nil || cs[0] != *r.Currency {
			return nil, &Error{Code: EINVALID, Message: fmt.Sprintf("the project's expenses are in %s but its budget is in %s: amounts in different currencies are never added",
				r.Currencies, deref(r.Currency, "no currency"))}
		}
	}
	if rep.ByMonth, rep.Spent, err = monthBuckets(r.Months); err != nil {
		return nil, err
	}
	var ok bool
	if rep.Remaining, ok = AddMinor(rep.Planned, -rep.Spent); !ok {
		return nil, overflow("remaining")
	}
	if rep.BudgetSet && rep.Planned > 0 {
		for _, pct := range BudgetThresholds {
			if reachedPercent(rep.Spent, rep.Planned, pct) {
				rep.Thresholds = append(rep.Thresholds, pct)
			}
		}
	}
	rep.BurnFrom = dateFrom(r.StartDate)
	if first := dateFrom(r.FirstSpentOn); !first.IsZero() && (rep.BurnFrom.IsZero() || first.Before(rep.BurnFrom)) {
		rep.BurnFrom = first
	}
	if !rep.BurnFrom.IsZero() && !rep.BurnFrom.After(rep.AsOf) {
		rep.BurnDays = int64(rep.BurnFrom.DaysUntil(rep.AsOf)) + 1
		rep.BurnRate = rep.Spent / rep.BurnDays
	}
	if !rep.Deadline.IsZero() {
		var left int64
		if r.Status != ProjectCompleted && r.Status != ProjectCancelled && rep.Deadline.After(rep.AsOf) {
			left = int64(rep.AsOf.DaysUntil(rep.Deadline))
		}
		rep.DaysLeft = &left
		more, ok := mulMinor(rep.BurnRate, left)
		if !ok {
			return nil, overflow("forecast_at_deadline")
		}
		f, ok := AddMinor(rep.Spent, more)
		if !ok {
			return nil, overflow("forecast_at_deadline")
		}
		rep.Forecast = &f
		rep.AtRisk = rep.BudgetSet && f > rep.Planned
	} else {
		rep.AtRisk = rep.BudgetSet && rep.Spent > rep.Planned
	}
	return rep, nil
}

// monthBuckets parses "YYYY-MM=sum,..." (sorted by month) into one bucket
// per month from the first to the last month with spending, months without
// spending included as 0, and returns the checked total.
func monthBuckets(s string) ([]MonthSpend, int64, error) {
	out := []MonthSpend{}
	if s == "" {
		return out, 0, nil
	}
	var total int64
	var next time.Time
	for _, part := range strings.Split(s, ",") {
		month, sum, _ := strings.Cut(part, "=")
		t, err := time.Parse("2006-01", month)
		if err != nil {
			return nil, 0, fmt.Errorf("budget month %q: %w", month, err)
		}
		v, err := parseMinor(sum)
		if err != nil {
			return nil, 0, err
		}
		for !next.IsZero() && next.Before(t) {
			out = append(out, MonthSpend{Month: next.Format("2006-01")})
			next = next.AddDate(0, 1, 0)
		}
		out = append(out, MonthSpend{Month: month, Spent: v})
		next = t.AddDate(0, 1, 0)
		var ok bool
		if total, ok = AddMinor(total, v); !ok {
			return nil, 0, overflow("spent")
		}
	}
	return out, total, nil
}

// mulMinor multiplies non-negative amounts, failing on int64 overflow.
func mulMinor(a, b int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	if a != 0 && b > math.MaxInt64/a {
		return 0, false
	}
	return a * b, true
}

func overflow(field string) *Error {
	return &Error{Code: EINVALID, Message: field + " does not fit a 64-bit integer of minor units; it is not rounded",
		Fields: []FieldError{{Field: field, Message: "overflows int64"}}}
}

func deref(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}
