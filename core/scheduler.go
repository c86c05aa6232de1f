package core

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// workSchemaVersion is the first tenant schema version with the tasks,
// milestones and expenses tables; the scheduler skips older schemas.
const workSchemaVersion = 2

// DefaultDeadlineWarningDays is how many days before a deadline
// deadline.approaching fires when neither the Scheduler nor the tenant's
// settings ("deadline_warning_days") say otherwise.
const DefaultDeadlineWarningDays = 7

// Scheduler computes the time-based events of every active tenant:
//
//   - deadline.approaching: a live, unfinished project's deadline, or a live
//     milestone (not done, of such a project) due within DaysBefore days
//     (today included); once per project/milestone and deadline date.
//   - project.overdue: a live project whose deadline passed while it is
//     neither completed nor cancelled; once per project and deadline date.
//   - budget.threshold_crossed: spending of a project with a positive budget
//     reached 50, 80 or 100 % of it; once per project, planned amount and
//     threshold (the expense transaction emits the same key synchronously).
//
// Every event carries a dedupe key, so any number of schedulers (one per
// worker replica) can run at once and each event is written exactly once.
// A tick costs one set-based query per tenant (candidates whose key is
// already in the outbox are filtered out in SQL) plus one insert per new
// event.
type Scheduler struct {
	DB     *gorm.DB
	Events EventSink
	// Tenants lists the tenants to scan (e.g. Registry.List with
	// tenant.StateActive).
	Tenants func(ctx context.Context) ([]tenant.Tenant, error)
	// Now is the clock (default time.Now); tests control it.
	Now func() time.Time
	// DaysBefore is the default warning window of deadline.approaching
	// (default 7); a tenant overrides it with the setting
	// "deadline_warning_days" (1-365).
	DaysBefore int
	// Interval between ticks (default 1 minute).
	Interval time.Duration
}

// Run ticks until ctx ends. A failed tenant is logged and retried next tick.
func (s *Scheduler) Run(ctx context.Context) error {
	interval := s.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	for {
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			slog.ErrorContext(ctx, "scheduler tick failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// Tick scans every tenant once and returns how many events it wrote. One
// tenant's failure does not stop the others; the first error is returned.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	ts, err := s.Tenants(ctx)
	if err != nil {
		return 0, fmt.Errorf("scheduler: %w", err)
	}
	total := 0
	var first error
	for i := range ts {
		t := &ts[i]
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		if t.State != tenant.StateActive || t.SchemaVersion < workSchemaVersion {
			continue
		}
		n, err := s.TickTenant(ctx, t.Scope(), s.warningDays(t.Settings))
		total += n
		if err != nil {
			slog.ErrorContext(ctx, "scheduler tenant failed", "tenant", t.Slug, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	return total, first
}

func (s *Scheduler) warningDays(settings string) int {
	days := s.DaysBefore
	if days <= 0 {
		days = DefaultDeadlineWarningDays
	}
	var st struct {
		Days *int `json:"deadline_warning_days"`
	}
	if settings != "" && json.Unmarshal([]byte(settings), &st) == nil && st.Days != nil && *st.Days >= 1 && *st.Days <= 365 {
		days = *st.Days
	}
	return days
}

type scheduledEvent struct {
	Type    string `gorm:"column:type"`
	Subject string `gorm:"column:subject"`
	Key     string `gorm:"column:key"`
	Payload string `gorm:"column:payload"`
}

// TickTenant writes the due time-based events of one tenant, with a warning
// window of days for deadline.approaching, and returns how many it wrote.
func (s *Scheduler) TickTenant(ctx context.Context, sc tenant.Scope, days int) (int, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	today := DateOf(now()).String()
	horizon := DateOf(now()).AddDays(days).String()
	t := sc.ID.String()
	live := "p.deleted_at IS NULL AND p.status NOT IN ('completed', 'cancelled')"
	thresholds := make([]string, len(BudgetThresholds))
	for i, v := range BudgetThresholds {
		thresholds[i] = strconv.FormatInt(v, 10)
	}
	// Keys are built in SQL exactly as in Go (thresholdKey, and below), and
	// candidates whose key is already in the outbox are dropped here, so a
	// quiet tenant costs one query and no writes.
	q := `WITH c AS (
		SELECT 'deadline.approaching' AS type, p.id::text AS subject,
			'deadline.approaching:' || @t || ':project:' || p.id || ':' || to_char(p.deadline, 'YYYY-MM-DD') AS key,
			json_build_object('kind', 'project', 'project_id', p.id, 'name', p.name, 'deadline', p.deadline,
				'days_left', p.deadline - CAST(@today AS date))::text AS payload
		FROM ` + sc.Table("projects") + ` p
		WHERE ` + live + ` AND p.deadline >= CAST(@today AS date) AND p.deadline <= CAST(@horizon AS date)
	UNION ALL
		SELECT 'deadline.approaching', m.id::text,
			'deadline.approaching:' || @t || ':milestone:' || m.id || ':' || to_char(m.due_date, 'YYYY-MM-DD'),
			json_build_object('kind', 'milestone', 'milestone_id', m.id, 'project_id', p.id, 'name', m.name,
				'deadline', m.due_date, 'days_left', m.due_date - CAST(@today AS date))::text
		FROM ` + sc.Table("milestones") + ` m JOIN ` + sc.Table("projects") + ` p ON p.id = m.project_id
		WHERE ` + live + ` AND m.deleted_at IS NULL AND NOT m.done AND m.due_date >= CAST(@today AS date) AND m.due_date <= CAST(@horizon AS date)
	UNION ALL
		SELECT 'project.overdue', p.id::text,
			'project.overdue:' || @t || ':' || p.id || ':' || to_char(p.deadline, 'YYYY-MM-DD'),
			json_build_object('project_id', p.id, 'name', p.name, 'deadline', p.deadline, 'status', p.status,
				'days_overdue', CAST(@today AS date) - p.deadline)::text
		FROM ` + sc.Table("projects") + ` p
		WHERE ` + live + ` AND p.deadline < CAST(@today AS date)
	UNION ALL
		SELECT 'budget.threshold_crossed', p.id::text,
			'budget.threshold_crossed:' || @t || ':' || p.id || ':' || p.budget_minor || ':' || th.pct,
			json_build_object('project_id', p.id, 'threshold_percent', th.pct, 'planned', p.budget_minor,
				'spent', s.spent, 'currency', p.currency)::text
		FROM ` + sc.Table("projects") + ` p
		JOIN (SELECT e.project_id, sum(e.amount_minor) AS spent FROM ` + sc.Table("expenses") + ` e
		      WHERE e.deleted_at IS NULL GROUP BY e.project_id) s ON s.project_id = p.id
		CROSS JOIN unnest(ARRAY[` + strings.Join(thresholds, ",") + `]::bigint[]) AS th(pct)
		WHERE p.deleted_at IS NULL AND p.budget_minor > 0 AND p.currency IS NOT NULL
		  AND s.spent * 100 >= p.budget_minor::numeric * th.pct
	)
	SELECT c.type, c.subject, c.key, c.payload FROM c
	WHERE NOT EXISTS (SELECT 1 FROM public.outbox o WHERE o.dedupe_key = c.key)
	ORDER BY c.key`
	var due []scheduledEvent
	if err := s.DB.WithContext(ctx).Raw(q, map[string]any{"t": t, "today": today, "horizon": horizon}).Scan(&due).Error; err != nil {
		return 0, fmt.Errorf("scheduler %s: %w", sc.Schema, err)
	}
	if len(due) == 0 {
		return 0, nil
	}
	n := 0
	err := s.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, e := range due {
			ok, err := s.Events.Emit(tx, sc.ID, uuid.Nil, e.Type, e.Subject, e.Key, json.RawMessage(e.Payload))
			if err != nil {
				return err
			}
			if ok {
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("scheduler %s: %w", sc.Schema, err)
	}
	return n, nil
}
