package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Project statuses.
const (
	ProjectPlanned   = "planned"
	ProjectActive    = "active"
	ProjectOnHold    = "on_hold"
	ProjectCompleted = "completed"
	ProjectCancelled = "cancelled"
)

// ProjectStatuses lists the valid project statuses.
var ProjectStatuses = []string{ProjectPlanned, ProjectActive, ProjectOnHold, ProjectCompleted, ProjectCancelled}

// Project is a tenant's project as clients see it.
type Project struct {
	ID            uuid.UUID      `json:"id"`
	Key           string         `json:"key"`
	Name          string         `json:"name"`
	Description   string         `json:"description"`
	Status        string         `json:"status"`
	StartDate     Date           `json:"start_date"`
	Deadline      Date           `json:"deadline"`
	Budget        *Money         `json:"budget"`
	BudgetSummary *BudgetSummary `json:"budget_summary,omitempty"`
	Progress      *Progress      `json:"progress,omitempty"`
	Overdue       bool           `json:"overdue"`
	CreatedBy     uuid.UUID      `json:"created_by"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
	Version       int64          `json:"-"`
	ETag          string         `json:"etag"`
}

// BudgetSummary is planned vs spent money of a project.
type BudgetSummary struct {
	Planned   int64  `json:"planned"`
	Spent     int64  `json:"spent"`
	Remaining int64  `json:"remaining"`
	Currency  string `json:"currency"`
}

// Progress summarises a project's tasks and milestones.
type Progress struct {
	TasksTotal      int     `json:"tasks_total"`
	TasksDone       int     `json:"tasks_done"`
	Percent         float64 `json:"percent"`
	MilestonesTotal int     `json:"milestones_total"`
	MilestonesMet   int     `json:"milestones_met"`
}

// ProjectInput creates a project.
type ProjectInput struct {
	Key         string
	Name        string
	Description string
	Status      string
	StartDate   Date
	Deadline    Date
	Budget      *Money
}

// ProjectUpdate changes a project partially: nil fields stay as they are; a
// non-nil zero Date clears the date.
type ProjectUpdate struct {
	Name        *string
	Description *string
	Status      *string
	StartDate   *Date
	Deadline    *Date
	Budget      *Money
}

// ProjectFilter selects projects.
type ProjectFilter struct {
	Status         string
	Overdue        bool
	DeadlineBefore *Date
	Query          string
	Limit          int
	Cursor         string
}

type projectRow struct {
	ID          uuid.UUID  `gorm:"column:id"`
	Key         string     `gorm:"column:key"`
	Name        string     `gorm:"column:name"`
	Description string     `gorm:"column:description"`
	Status      string     `gorm:"column:status"`
	StartDate   *time.Time `gorm:"column:start_date"`
	Deadline    *time.Time `gorm:"column:deadline"`
	BudgetMinor int64      `gorm:"column:budget_minor"`
	Currency    *string    `gorm:"column:currency"`
	Version     int64      `gorm:"column:version"`
	CreatedBy   uuid.UUID  `gorm:"column:created_by"`
	CreatedAt   time.Time  `gorm:"column:created_at"`
	UpdatedAt   time.Time  `gorm:"column:updated_at"`
	DeletedAt   *time.Time `gorm:"column:deleted_at"`
}

const projectColumns = "id, key, name, description, status, start_date, deadline, budget_minor, currency, version, created_by, created_at, updated_at, deleted_at"

func (r *projectRow) project(today Date) *Project {
	p := &Project{
		ID: r.ID, Key: r.Key, Name: r.Name, Description: r.Description, Status: r.Status,
		StartDate: dateFrom(r.StartDate), Deadline: dateFrom(r.Deadline), CreatedBy: r.CreatedBy,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Version: r.Version, ETag: ETag(r.Version),
	}
	if r.Currency != nil {
		p.Budget = &Money{AmountMinor: r.BudgetMinor, Currency: *r.Currency}
	}
	p.Overdue = !p.Deadline.IsZero() && p.Deadline.Before(today) &&
		p.Status != ProjectCompleted && p.Status != ProjectCancelled
	return p
}

// ProjectService manages projects.
type ProjectService struct {
	DB     *gorm.DB
	Now    func() time.Time
	Events EventSink
	Hooks  ValidationHooks
	// DocumentGrace is how long the documents of a deleted project are kept
	// before their blobs are purged (default 7 days, as DocumentService).
	DocumentGrace time.Duration
}

func (s *ProjectService) today() Date {
	if s.Now != nil {
		return DateOf(s.Now())
	}
	return DateOf(time.Now())
}

func validStatus(s string) bool {
	for _, v := range ProjectStatuses {
		if v == s {
			return true
		}
	}
	return false
}

func validateProject(v *Validator, key, name, description, status string, start, deadline Date, budget *Money, creating bool) {
	if creating {
		v.Check(projectKeyOK(key), "key", "must be 2-20 characters: upper-case letters, digits, '-' or '_', starting with a letter")
	}
	v.Check(strings.TrimSpace(name) != "" && utf8.RuneCountInString(name) <= 200, "name", "must be 1-200 characters")
	v.Check(utf8.RuneCountInString(description) <= 10000, "description", "must be at most 10000 characters")
	v.Check(validStatus(status), "status", "must be one of "+strings.Join(ProjectStatuses, ", "))
	if !start.IsZero() && !deadline.IsZero() {
		v.Check(!deadline.Before(start), "deadline", "must not be before start_date")
	}
	if budget != nil {
		v.Check(budget.AmountMinor >= 0, "budget.amount_minor", "must not be negative")
		v.Check(ValidCurrency(budget.Currency), "budget.currency", "must be an ISO 4217 currency code")
	}
}

func projectKeyOK(k string) bool {
	if len(k) < 2 || len(k) > 20 || k[0] < 'A' || k[0] > 'Z' {
		return false
	}
	for _, c := range k {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Create creates a project. It returns EINVALID for bad input, ECONFLICT if
// the key is used by another live project, and EPLUGINREJECTED if a
// validation plugin refused it.
func (s *ProjectService) Create(ctx context.Context, sc tenant.Scope, actor Actor, in ProjectInput) (*Project, error) {
	if in.Status == "" {
		in.Status = ProjectPlanned
	}
	var v Validator
	validateProject(&v, in.Key, in.Name, in.Description, in.Status, in.StartDate, in.Deadline, in.Budget, true)
	if err := v.Err(); err != nil {
		return nil, err
	}
	patched, err := s.Hooks.validatePatched(ctx, sc, ValidationRequest{Hook: HookProjectValidate, Operation: OpCreate, Input: projectHookView(in)})
	if err != nil {
		return nil, err
	}
	if patched != nil {
		if in, err = applyProjectPatch(in, patched, true); err != nil {
			return nil, err
		}
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	row := projectRow{ID: id, Key: in.Key, Name: in.Name, Description: in.Description, Status: in.Status,
		StartDate: datePtr(in.StartDate), Deadline: datePtr(in.Deadline), Version: 1,
		CreatedBy: actor.UserID, CreatedAt: now, UpdatedAt: now}
	if in.Budget != nil {
		row.BudgetMinor, row.Currency = in.Budget.AmountMinor, &in.Budget.Currency
	}
	p := row.project(s.today())
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if err := tx.Table(sc.Table("projects")).Omit("deleted_at").Create(&row).Error; err != nil {
			return err
		}
		if err := RecordAudit(tx, sc, actor, "project.create", "project", id.String(), OutcomeSuccess, map[string]any{"key": in.Key}); err != nil {
			return err
		}
		return s.Events.emit(tx, sc, actor, EventProjectCreated, id.String(), p)
	})
	if isUnique(err) {
		return nil, &Error{Code: ECONFLICT, Message: fmt.Sprintf("a project with key %s already exists", in.Key)}
	} else if err != nil {
		return nil, fmt.Errorf("create project: %w", err)
	}
	p.BudgetSummary = budgetSummary(p.Budget, 0)
	p.Progress = &Progress{}
	return p, nil
}

// Get returns a live project with its budget summary and progress. It
// returns ENOTFOUND if there is no such live project in the tenant.
func (s *ProjectService) Get(ctx context.Context, sc tenant.Scope, id uuid.UUID) (*Project, error) {
	row, err := s.find(s.DB.WithContext(ctx), sc, id, false)
	if err != nil {
		return nil, err
	}
	p := row.project(s.today())
	var agg struct {
		Spent           int64
		TasksTotal      int
		TasksDone       int
		MilestonesTotal int
		MilestonesMet   int
	}
	// One round trip for the derived numbers.
	err = s.DB.WithContext(ctx).Raw(`SELECT
		(SELECT coalesce(sum(amount_minor), 0) FROM `+sc.Table("expenses")+` WHERE project_id = @id AND deleted_at IS NULL) AS spent,
		(SELECT count(*) FROM `+sc.Table("tasks")+` WHERE project_id = @id AND deleted_at IS NULL) AS tasks_total,
		(SELECT count(*) FROM `+sc.Table("tasks")+` WHERE project_id = @id AND deleted_at IS NULL AND status = 'done') AS tasks_done,
		(SELECT count(*) FROM `+sc.Table("milestones")+` WHERE project_id = @id AND deleted_at IS NULL) AS milestones_total,
		(SELECT count(*) FROM `+sc.Table("milestones")+` WHERE project_id = @id AND deleted_at IS NULL AND done) AS milestones_met`,
		map[string]any{"id": id}).Scan(&agg).Error
	if err != nil {
		return nil, fmt.Errorf("project summary: %w", err)
	}
	p.BudgetSummary = budgetSummary(p.Budget, agg.Spent)
	p.Progress = &Progress{TasksTotal: agg.TasksTotal, TasksDone: agg.TasksDone,
		MilestonesTotal: agg.MilestonesTotal, MilestonesMet: agg.MilestonesMet}
	if agg.TasksTotal > 0 {
		p.Progress.Percent = float64(agg.TasksDone*10000/agg.TasksTotal) / 100
	}
	return p, nil
}

func budgetSummary(b *Money, spent int64) *BudgetSummary {
	if b == nil {
		return nil
	}
	return &BudgetSummary{Planned: b.AmountMinor, Spent: spent, Remaining: b.AmountMinor - spent, Currency: b.Currency}
}

func (s *ProjectService) find(db *gorm.DB, sc tenant.Scope, id uuid.UUID, lock bool) (*projectRow, error) {
	q := db.Table(sc.Table("projects")).Select(projectColumns).Where("id = ? AND deleted_at IS NULL", id)
	if lock {
		q = q.Clauses(lockForUpdate)
	}
	var row projectRow
	err := q.Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	} else if err != nil {
		return nil, fmt.Errorf("find project: %w", err)
	}
	return &row, nil
}

// List returns live projects, newest first.
func (s *ProjectService) List(ctx context.Context, sc tenant.Scope, f ProjectFilter) (*Page[Project], error) {
	limit := ClampLimit(f.Limit)
	q := s.DB.WithContext(ctx).Table(sc.Table("projects")).Select(projectColumns).Where("deleted_at IS NULL")
	if f.Status != "" {
		if !validStatus(f.Status) {
			return nil, Invalid(FieldError{Field: "status", Message: "must be one of " + strings.Join(ProjectStatuses, ", ")})
		}
		q = q.Where("status = ?", f.Status)
	}
	today := s.today()
	if f.Overdue {
		q = q.Where("deadline < ? AND status NOT IN ('completed','cancelled')", today.Time())
	}
	if f.DeadlineBefore != nil {
		q = q.Where("deadline < ?", f.DeadlineBefore.Time())
	}
	if f.Query != "" {
		if len(f.Query) > 200 {
			return nil, Invalid(FieldError{Field: "q", Message: "must be at most 200 characters"})
		}
		q = q.Where("search @@ websearch_to_tsquery('simple', ?)", f.Query)
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		q = q.Where("id < ?", id)
	}
	var rows []projectRow
	if err := q.Order("id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	items := make([]Project, len(rows))
	for i := range rows {
		items[i] = *rows[i].project(today)
	}
	return pageOf(items, limit, func(p Project) uuid.UUID { return p.ID }), nil
}

// Update applies a partial update if the project is still at version
// ifMatch. The project.validate hook runs before the transaction on the
// project as loaded; the transaction locks the row and applies the change
// only if it is still at that version (otherwise EPRECONDITION: the client's
// If-Match is stale). It returns ENOTFOUND, EPRECONDITION (stale version),
// EINVALID, ECONFLICT (currency change with expenses recorded) or
// EPLUGINREJECTED.
func (s *ProjectService) Update(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, ifMatch int64, u ProjectUpdate) (*Project, error) {
	stale := &Error{Code: EPRECONDITION, Message: "the project has changed since you read it (ETag mismatch)"}
	row, err := s.find(s.DB.WithContext(ctx), sc, id, false)
	if err != nil {
		return nil, err
	}
	if row.Version != ifMatch {
		return nil, stale
	}
	before := row.project(s.today())
	changed := map[string]any{}
	if u.Name != nil {
		row.Name, changed["name"] = *u.Name, *u.Name
	}
	if u.Description != nil {
		row.Description, changed["description"] = *u.Description, *u.Description
	}
	if u.Status != nil {
		row.Status, changed["status"] = *u.Status, *u.Status
	}
	if u.StartDate != nil {
		row.StartDate, changed["start_date"] = datePtr(*u.StartDate), datePtr(*u.StartDate)
	}
	if u.Deadline != nil {
		row.Deadline, changed["deadline"] = datePtr(*u.Deadline), datePtr(*u.Deadline)
	}
	currencyChange := false
	if u.Budget != nil {
		// Rule: a project's currency is fixed once it has expenses;
		// converting would need exchange rates we do not guess. Checked in
		// the transaction, where no expense can be added meanwhile.
		currencyChange = row.Currency != nil && *row.Currency != u.Budget.Currency
		row.BudgetMinor, row.Currency = u.Budget.AmountMinor, &u.Budget.Currency
		changed["budget_minor"], changed["currency"] = u.Budget.AmountMinor, u.Budget.Currency
	}
	p := row.project(s.today())
	var v Validator
	validateProject(&v, row.Key, row.Name, row.Description, row.Status, p.StartDate, p.Deadline, p.Budget, false)
	if err := v.Err(); err != nil {
		return nil, err
	}
	if len(changed) == 0 {
		return s.Get(ctx, sc, id)
	}
	patched, err := s.Hooks.validatePatched(ctx, sc, ValidationRequest{Hook: HookProjectValidate, Operation: OpUpdate,
		Input: projectHookViewOf(p), Current: projectHookViewOf(before)})
	if err != nil {
		return nil, err
	}
	if patched != nil {
		in, err := applyProjectPatch(ProjectInput{Key: p.Key, Name: p.Name, Description: p.Description, Status: p.Status,
			StartDate: p.StartDate, Deadline: p.Deadline, Budget: p.Budget}, patched, false)
		if err != nil {
			return nil, err
		}
		// The key is fixed after creation; everything else a plugin
		// normalised is written like a client's change.
		row.Name, row.Description, row.Status = in.Name, in.Description, in.Status
		row.StartDate, row.Deadline = datePtr(in.StartDate), datePtr(in.Deadline)
		changed["name"], changed["description"], changed["status"] = in.Name, in.Description, in.Status
		changed["start_date"], changed["deadline"] = row.StartDate, row.Deadline
		if in.Budget != nil {
			if p.Budget != nil && p.Budget.Currency != in.Budget.Currency {
				return nil, Invalid(FieldError{Field: "budget.currency", Message: "a plugin may not change the budget currency"})
			}
			row.BudgetMinor, row.Currency = in.Budget.AmountMinor, &in.Budget.Currency
			changed["budget_minor"], changed["currency"] = in.Budget.AmountMinor, in.Budget.Currency
		}
	}
	var out *Project
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		cur, err := s.find(tx, sc, id, true)
		if err != nil {
			return err
		}
		if cur.Version != ifMatch {
			return stale
		}
		if currencyChange {
			var n int64
			if err := tx.Table(sc.Table("expenses")).Where("project_id = ? AND deleted_at IS NULL", id).Limit(1).Count(&n).Error; err != nil {
				return err
			}
			if n > 0 {
				return &Error{Code: ECONFLICT, Message: "the budget currency cannot change once expenses are recorded"}
			}
		}
		now := time.Now().UTC()
		changed["version"] = gorm.Expr("version + 1")
		changed["updated_at"] = now
		if err := tx.Table(sc.Table("projects")).Where("id = ?", id).Updates(changed).Error; err != nil {
			return err
		}
		row.Version = cur.Version + 1
		row.UpdatedAt = now
		out = row.project(s.today())
		audit := make(map[string]any, len(changed))
		for k, v := range changed {
			if k != "version" && k != "updated_at" {
				audit[k] = v
			}
		}
		if err := RecordAudit(tx, sc, actor, "project.update", "project", id.String(), OutcomeSuccess, audit); err != nil {
			return err
		}
		if err := s.Events.emit(tx, sc, actor, EventProjectUpdated, id.String(), out); err != nil {
			return err
		}
		if before.Status != ProjectCompleted && out.Status == ProjectCompleted {
			return s.Events.emit(tx, sc, actor, EventProjectCompleted, id.String(), out)
		}
		return nil
	})
	if err != nil {
		return nil, domainErr("update project", err)
	}
	return s.Get(ctx, sc, out.ID)
}

// Delete soft-deletes a project; its key becomes free again. It returns
// ENOTFOUND if there is no such live project.
func (s *ProjectService) Delete(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID) error {
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		res := tx.Exec("UPDATE "+sc.Table("projects")+" SET deleted_at = now(), version = version + 1, updated_at = now() WHERE id = ? AND deleted_at IS NULL", id)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return &Error{Code: ENOTFOUND, Message: "project not found"}
		}
		// Its documents go with it (they are addressed by their own ids, so
		// hiding the project alone would leave them reachable and counted
		// against the quota); the collector purges their blobs after grace.
		grace := s.DocumentGrace
		if grace <= 0 {
			grace = 7 * 24 * time.Hour
		}
		docs := tx.Exec("UPDATE "+sc.Table("documents")+` SET deleted_at = now(), purge_after = now() + make_interval(secs => ?),
			version = version + 1, updated_at = now() WHERE project_id = ? AND deleted_at IS NULL`, grace.Seconds(), id)
		if docs.Error != nil {
			return docs.Error
		}
		if err := RecordAudit(tx, sc, actor, "project.delete", "project", id.String(), OutcomeSuccess,
			map[string]any{"documents_deleted": docs.RowsAffected}); err != nil {
			return err
		}
		return s.Events.emit(tx, sc, actor, EventProjectDeleted, id.String(), map[string]any{"id": id})
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return err
		}
		return fmt.Errorf("delete project: %w", err)
	}
	return nil
}

func projectHookView(in ProjectInput) map[string]any {
	m := map[string]any{"key": in.Key, "name": in.Name, "description": in.Description, "status": in.Status,
		"start_date": in.StartDate, "deadline": in.Deadline}
	if in.Budget != nil {
		m["budget"] = in.Budget
	}
	return m
}

func projectHookViewOf(p *Project) map[string]any {
	return projectHookView(ProjectInput{Key: p.Key, Name: p.Name, Description: p.Description, Status: p.Status,
		StartDate: p.StartDate, Deadline: p.Deadline, Budget: p.Budget})
}

func isUnique(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// applyProjectPatch applies the plugins' patched view of a project to in and
// validates the result again with the platform's own rules: a plugin may
// normalise a field, never smuggle in an invalid one.
func applyProjectPatch(in ProjectInput, patched json.RawMessage, creating bool) (ProjectInput, error) {
	var v struct {
		Key         string `json:"key"`
		Name        string `json:"name"`
		Description string `json:"description"`
		Status      string `json:"status"`
		StartDate   Date   `json:"start_date"`
		Deadline    Date   `json:"deadline"`
		Budget      *Money `json:"budget"`
	}
	if err := json.Unmarshal(patched, &v); err != nil {
		return in, Invalid(FieldError{Field: "plugin_patch", Message: "a validation plugin returned a patch that does not fit a project: " + err.Error()})
	}
	out := ProjectInput{Key: v.Key, Name: v.Name, Description: v.Description, Status: v.Status,
		StartDate: v.StartDate, Deadline: v.Deadline, Budget: v.Budget}
	if !creating {
		out.Key = in.Key
	}
	var val Validator
	validateProject(&val, out.Key, out.Name, out.Description, out.Status, out.StartDate, out.Deadline, out.Budget, creating)
	if err := val.Err(); err != nil {
		return in, err
	}
	return out, nil
}

type projectStateRow struct {
	Row   projectRow `gorm:"embedded"`
	Spent string     `gorm:"column:spent"`
	N     int64      `gorm:"column:n"`
}

// projectState is a live project as a validated write loads it: the row,
// its live spending and its number of expenses.
type projectState struct {
	row      projectRow
	spent    int64
	expenses int64
}

// loadProjectState reads a live project and its spending. Without lock it
// is one query on any connection (the state validation hooks decide on);
// with lock ("SHARE", "NO KEY UPDATE", ...) the row is locked first and the
// spending read by a second statement, whose snapshot then includes every
// expense committed before the lock was granted (a subquery in the locking
// statement would use the snapshot taken before the wait). It returns
// ENOTFOUND for a missing or deleted project.
func loadProjectState(db *gorm.DB, sc tenant.Scope, id uuid.UUID, lock string) (*projectState, error) {
	var agg struct {
		Spent string `gorm:"column:spent"`
		N     int64  `gorm:"column:n"`
	}
	st := &projectState{}
	if lock == "" {
		var rows []projectStateRow
		err := db.Raw("SELECT p."+strings.ReplaceAll(projectColumns, ", ", ", p.")+", e.spent, e.n FROM "+sc.Table("projects")+` p,
			LATERAL (SELECT coalesce(sum(amount_minor), 0)::text AS spent, count(*) AS n FROM `+sc.Table("expenses")+`
			WHERE project_id = p.id AND deleted_at IS NULL) e
			WHERE p.id = ? AND p.deleted_at IS NULL`, id).Scan(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("load project: %w", err)
		}
		if len(rows) == 0 {
			return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
		}
		st.row, agg.Spent, agg.N = rows[0].Row, rows[0].Spent, rows[0].N
	} else {
		row, err := liveProject(db, sc, id, lock)
		if err != nil {
			return nil, err
		}
		st.row = *row
		if err := db.Raw("SELECT coalesce(sum(amount_minor), 0)::text AS spent, count(*) AS n FROM "+sc.Table("expenses")+
			" WHERE project_id = ? AND deleted_at IS NULL", id).Scan(&agg).Error; err != nil {
			return nil, fmt.Errorf("load project spending: %w", err)
		}
	}
	spent, err := parseMinor(agg.Spent)
	if err != nil {
		return nil, err
	}
	st.spent, st.expenses = spent, agg.N
	return st, nil
}

// context is the project as validation hooks see it.
func (st *projectState) context() *ProjectContext {
	p := st.row.project(Date{})
	return &ProjectContext{ID: p.ID, Key: p.Key, Name: p.Name, Budget: p.Budget, BudgetSummary: budgetSummary(p.Budget, st.spent)}
}

// sameBudget reports whether an expense hook that saw o would see st the
// same way: the same row version (budget amount and currency) and the same
// spending.
func (st *projectState) sameBudget(o *projectState) bool {
	return st.row.Version == o.row.Version && st.spent == o.spent && st.expenses == o.expenses
}
