package core

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Limits of expense fields.
const (
	MaxCategoryLen = 64
	MaxNoteLen     = 2000
)

// earliestSpentOn is the oldest date an expense may carry.
var earliestSpentOn = Date{time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)}

// BudgetThresholds are the percentages of a project's planned budget whose
// crossing emits budget.threshold_crossed (once per threshold and budget).
var BudgetThresholds = []int64{50, 80, 100}

// Expense is money spent on a project, in the currency of its budget.
type Expense struct {
	ID          uuid.UUID `json:"id"`
	ProjectID   uuid.UUID `json:"project_id"`
	AmountMinor int64     `json:"amount_minor"`
	Currency    string    `json:"currency"`
	Category    string    `json:"category"`
	SpentOn     Date      `json:"spent_on"`
	Note        string    `json:"note"`
	CreatedBy   uuid.UUID `json:"created_by"`
	CreatedAt   time.Time `json:"created_at"`
	ETag        string    `json:"etag"`
}

// ExpenseInput records an expense.
type ExpenseInput struct {
	AmountMinor int64
	Currency    string
	Category    string
	SpentOn     Date
	Note        string
}

// ExpenseFilter selects expenses of a project; SpentFrom and SpentTo are
// inclusive.
type ExpenseFilter struct {
	Category  string
	SpentFrom *Date
	SpentTo   *Date
	Limit     int
	Cursor    string
}

type expenseRow struct {
	ID          uuid.UUID `gorm:"column:id"`
	ProjectID   uuid.UUID `gorm:"column:project_id"`
	AmountMinor int64     `gorm:"column:amount_minor"`
	Currency    string    `gorm:"column:currency"`
	Category    string    `gorm:"column:category"`
	SpentOn     time.Time `gorm:"column:spent_on"`
	Note        string    `gorm:"column:note"`
	Version     int64     `gorm:"column:version"`
	CreatedBy   uuid.UUID `gorm:"column:created_by"`
	CreatedAt   time.Time `gorm:"column:created_at"`
}

func (r *expenseRow) expense() *Expense {
	return &Expense{ID: r.ID, ProjectID: r.ProjectID, AmountMinor: r.AmountMinor, Currency: r.Currency, Category: r.Category,
		SpentOn: DateOf(r.SpentOn), Note: r.Note, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), ETag: ETag(r.Version)}
}

// ExpenseService records and lists the expenses of projects.
type ExpenseService struct {
	DB     *gorm.DB
	Now    func() time.Time
	Events EventSink
	Hooks  ValidationHooks
	// Queue makes expenses of one project take turns in this process; nil
	// uses the service's own queue with the default wait. (Across replicas
	// the transaction's re-check keeps them correct.)
	Queue *WriteQueue

	ownQueue WriteQueue
}

func (s *ExpenseService) queue() *WriteQueue {
	if s.Queue != nil {
		return s.Queue
	}
	return &s.ownQueue
}

// latestSpentOn is the latest date an expense may carry: today where the
// day is furthest ahead (UTC+14), so nobody's local "today" is refused.
func latestSpentOn(now func() time.Time) Date {
	t := time.Now()
	if now != nil {
		t = now()
	}
	return DateOf(t.Add(14 * time.Hour))
}

// Create records an expense on a live project with a budget. The amount is
// positive, in minor units of the budget's currency; spent_on is not in the
// future.
//
// The expense.validate hook runs before the transaction, on the project and
// spending loaded once (the plugins see them as "project"); the transaction
// locks the project row, re-reads the budget, currency and spending, and if
// any changed since the hook decided, the whole cycle runs again (at most
// MaxWriteAttempts times), so a budget guard cannot be bypassed by
// concurrent expenses. Writers of one project take turns in this process
// (Queue). The lock also makes concurrent expenses see each other's totals,
// so a budget threshold crossed by this expense emits
// budget.threshold_crossed exactly once (the scheduler uses the same dedupe
// key). It returns ENOTFOUND for a missing project, EINVALID for bad input,
// a project without a budget, a currency other than the budget's, or
// spending that would overflow int64, EPLUGINREJECTED if a validation
// plugin refused it, ECONFLICT if the project kept changing meanwhile, and
// EUNAVAILABLE if the project's queue or a dependency is too busy.
func (s *ExpenseService) Create(ctx context.Context, sc tenant.Scope, actor Actor, projectID uuid.UUID, in ExpenseInput) (*Expense, error) {
	in.Category = strings.TrimSpace(in.Category)
	var v Validator
	v.Check(in.AmountMinor > 0, "amount_minor", "must be a positive integer (minor units)")
	v.Check(ValidCurrency(in.Currency), "currency", "must be an ISO 4217 currency code")
	if in.SpentOn.IsZero() {
		v.Check(false, "spent_on", "is required (YYYY-MM-DD)")
	} else {
		v.Check(!in.SpentOn.After(latestSpentOn(s.Now)), "spent_on", "must not be in the future")
		v.Check(!in.SpentOn.Before(earliestSpentOn), "spent_on", "must be 1970-01-01 or later")
	}
	v.Check(utf8.RuneCountInString(in.Category) <= MaxCategoryLen, "category", fmt.Sprintf("must be at most %d characters", MaxCategoryLen))
	v.Check(utf8.RuneCountInString(in.Note) <= MaxNoteLen, "note", fmt.Sprintf("must be at most %d characters", MaxNoteLen))
	if err := v.Err(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	row := expenseRow{ID: id, ProjectID: projectID, AmountMinor: in.AmountMinor, Currency: in.Currency, Category: in.Category,
		SpentOn: in.SpentOn.Time(), Note: in.Note, Version: 1, CreatedBy: actor.UserID, CreatedAt: time.Now().UTC()}
	turn, err := s.queue().enter(ctx, sc.Schema+"/"+projectID.String())
	if err != nil {
		return nil, err
	}
	defer turn.leave()
	err = retryStale("the project's budget or spending", func() error {
		var err error
		// The previous writer of this project in this process left the
		// state its write committed: under contention that saves the load.
		// The transaction re-checks it like a loaded one.
		st, _ := turn.cached().(*projectState)
		if st == nil {
			if st, err = loadProjectState(s.DB.WithContext(ctx), sc, projectID, ""); err != nil {
				return err
			}
		}
		if _, err := st.checkExpense(in.AmountMinor, in.Currency); err != nil {
			return err
		}
		view := map[string]any{"project_id": projectID, "amount_minor": in.AmountMinor, "currency": in.Currency,
			"category": in.Category, "spent_on": in.SpentOn, "note": in.Note}
		if err := s.Hooks.validate(ctx, sc, ValidationRequest{Hook: HookExpenseValidate, Operation: OpCreate, Input: view,
			Project: st.context()}); err != nil {
			return err
		}
		var committed projectState
		err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
			// NO KEY UPDATE serialises expenses of one project without
			// blocking the foreign-key checks of task and milestone inserts.
			// The spending is read by a second statement, after the lock,
			// so it includes every expense committed before the lock was
			// granted.
			cur, err := loadProjectState(tx, sc, projectID, "NO KEY UPDATE")
			if err != nil {
				return err
			}
			if !cur.sameBudget(st) {
				return errStale
			}
			after, err := cur.checkExpense(in.AmountMinor, in.Currency)
			if err != nil {
				return err
			}
			if err := tx.Table(sc.Table("expenses")).Create(&row).Error; err != nil {
				return err
			}
			if err := RecordAudit(tx, sc, actor, "expense.create", "expense", id.String(), OutcomeSuccess,
				map[string]any{"project_id": projectID, "amount_minor": in.AmountMinor, "currency": in.Currency}); err != nil {
				return err
			}
			if err := s.Events.emit(tx, sc, actor, EventExpenseRecorded, id.String(), row.expense()); err != nil {
				return err
			}
			p := cur.row
			for _, pct := range BudgetThresholds {
				if p.BudgetMinor > 0 && !reachedPercent(cur.spent, p.BudgetMinor, pct) && reachedPercent(after, p.BudgetMinor, pct) {
					if _, err := emitThreshold(tx, s.Events, sc.ID, actor.UserID, projectID, p.BudgetMinor, *p.Currency, after, pct); err != nil {
						return err
					}
				}
			}
			committed = projectState{row: cur.row, spent: after, expenses: cur.expenses + 1}
			return nil
		})
		if err == nil {
			turn.keep(&committed)
		}
		return err
	})
	if err != nil {
		return nil, domainErr("record expense", err)
	}
	return row.expense(), nil
}

// checkExpense applies the budget rules to a new expense on the project and
// returns the spending after it.
func (st *projectState) checkExpense(amount int64, currency string) (int64, error) {
	p := st.row
	if p.Currency == nil {
		return 0, Invalid(FieldError{Field: "currency", Message: "the project has no budget: set one before recording expenses"})
	}
	if *p.Currency != currency {
		return 0, Invalid(FieldError{Field: "currency", Message: fmt.Sprintf("must be %s, the currency of the project's budget (got %s)", *p.Currency, currency)})
	}
	if st.expenses >= MaxExpensesPerProject {
		return 0, Invalid(FieldError{Field: "project", Message: fmt.Sprintf("a project holds at most %d expenses", MaxExpensesPerProject)})
	}
	after, ok := AddMinor(st.spent, amount)
	if !ok {
		return 0, Invalid(FieldError{Field: "amount_minor", Message: "the project's total spending would overflow a 64-bit integer"})
	}
	return after, nil
}

// parseMinor parses a total computed by PostgreSQL; a total beyond int64 is
// EINVALID, never rounded.
func parseMinor(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, &Error{Code: EINVALID, Message: "the project's spending does not fit a 64-bit integer of minor units"}
	}
	return v, nil
}

// reachedPercent reports whether spent >= pct % of planned, exactly, in
// 128-bit arithmetic (spent*100 >= planned*pct); all values non-negative.
func reachedPercent(spent, planned, pct int64) bool {
	if spent < 0 || planned < 0 || pct < 0 {
		return false
	}
	sh, sl := bits.Mul64(uint64(spent), 100)
	ph, pl := bits.Mul64(uint64(planned), uint64(pct))
	return sh > ph || (sh == ph && sl >= pl)
}

// thresholdKey is the dedupe key of budget.threshold_crossed: one event per
// project, planned amount and threshold, whichever of the expense
// transaction and the scheduler writes it first. A new planned amount
// re-arms the thresholds.
func thresholdKey(tenantID, projectID uuid.UUID, planned, pct int64) string {
	return fmt.Sprintf("%s:%s:%s:%d:%d", EventBudgetThreshold, tenantID, projectID, planned, pct)
}

// thresholdEvent is the data of budget.threshold_crossed.
type thresholdEvent struct {
	ProjectID        uuid.UUID `json:"project_id"`
	ThresholdPercent int64     `json:"threshold_percent"`
	Planned          int64     `json:"planned"`
	Spent            int64     `json:"spent"`
	Currency         string    `json:"currency"`
}

func emitThreshold(tx *gorm.DB, sink EventSink, tenantID, actorID, projectID uuid.UUID, planned int64, currency string, spent, pct int64) (bool, error) {
	return sink.Emit(tx, tenantID, actorID, EventBudgetThreshold, projectID.String(), thresholdKey(tenantID, projectID, planned, pct),
		thresholdEvent{ProjectID: projectID, ThresholdPercent: pct, Planned: planned, Spent: spent, Currency: currency})
}

// List returns the live expenses of a live project, newest first. It
// returns ENOTFOUND for a missing project and EINVALID for a bad filter.
func (s *ExpenseService) List(ctx context.Context, sc tenant.Scope, projectID uuid.UUID, f ExpenseFilter) (*Page[Expense], error) {
	limit := ClampLimit(f.Limit)
	conds := []string{"e.project_id = p.id", "e.deleted_at IS NULL"}
	var args []any
	if f.Category != "" {
		if utf8.RuneCountInString(f.Category) > MaxCategoryLen {
			return nil, Invalid(FieldError{Field: "category", Message: fmt.Sprintf("must be at most %d characters", MaxCategoryLen)})
		}
		conds, args = append(conds, "e.category = ?"), append(args, f.Category)
	}
	if f.SpentFrom != nil {
		conds, args = append(conds, "e.spent_on >= ?::date"), append(args, f.SpentFrom.String())
	}
	if f.SpentTo != nil {
		conds, args = append(conds, "e.spent_on <= ?::date"), append(args, f.SpentTo.String())
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		conds, args = append(conds, "e.id < ?"), append(args, id)
	}
	// One round trip: zero rows means no such project; a project without
	// matching expenses gives one row of NULLs.
	q := "SELECT e.id, e.project_id, e.amount_minor, e.currency, e.category, e.spent_on, e.note, e.version, e.created_by, e.created_at FROM " +
		sc.Table("projects") + " p LEFT JOIN " + sc.Table("expenses") + " e ON " + strings.Join(conds, " AND ") +
		" WHERE p.id = ? AND p.deleted_at IS NULL ORDER BY e.id DESC LIMIT ?"
	args = append(args, projectID, limit+1)
	var rows []struct {
		ID          *uuid.UUID `gorm:"column:id"`
		ProjectID   *uuid.UUID `gorm:"column:project_id"`
		AmountMinor *int64     `gorm:"column:amount_minor"`
		Currency    *string    `gorm:"column:currency"`
		Category    *string    `gorm:"column:category"`
		SpentOn     *time.Time `gorm:"column:spent_on"`
		Note        *string    `gorm:"column:note"`
		Version     *int64     `gorm:"column:version"`
		CreatedBy   *uuid.UUID `gorm:"column:created_by"`
		CreatedAt   *time.Time `gorm:"column:created_at"`
	}
	if err := s.DB.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list expenses: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	items := make([]Expense, 0, len(rows))
	for _, r := range rows {
		if r.ID == nil {
			continue
		}
		row := expenseRow{ID: *r.ID, ProjectID: *r.ProjectID, AmountMinor: *r.AmountMinor, Currency: *r.Currency, Category: *r.Category,
			SpentOn: *r.SpentOn, Note: *r.Note, Version: *r.Version, CreatedBy: *r.CreatedBy, CreatedAt: *r.CreatedAt}
		items = append(items, *row.expense())
	}
	return pageOf(items, limit, func(e Expense) uuid.UUID { return e.ID }), nil
}

// Delete soft-deletes an expense; the project's spending drops by its
// amount. Thresholds already crossed stay crossed (their events are not
// taken back). It returns ENOTFOUND if the expense or its project does not
// exist in the tenant.
func (s *ExpenseService) Delete(ctx context.Context, sc tenant.Scope, actor Actor, projectID, id uuid.UUID) error {
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if _, err := liveProject(tx, sc, projectID, "NO KEY UPDATE"); err != nil {
			return err
		}
		var rows []expenseRow
		if err := tx.Raw("UPDATE "+sc.Table("expenses")+" SET deleted_at = now(), version = version + 1 WHERE id = ? AND project_id = ? AND deleted_at IS NULL "+
			"RETURNING id, project_id, amount_minor, currency, category, spent_on, note, version, created_by, created_at", id, projectID).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return &Error{Code: ENOTFOUND, Message: "expense not found"}
		}
		e := rows[0].expense()
		if err := RecordAudit(tx, sc, actor, "expense.delete", "expense", id.String(), OutcomeSuccess,
			map[string]any{"project_id": projectID, "amount_minor": e.AmountMinor, "currency": e.Currency}); err != nil {
			return err
		}
		return s.Events.emit(tx, sc, actor, EventExpenseDeleted, id.String(), e)
	})
	return domainErr("delete expense", err)
}
