package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Task statuses.
const (
	TaskTodo       = "todo"
	TaskInProgress = "in_progress"
	TaskBlocked    = "blocked"
	TaskDone       = "done"
)

// TaskStatuses lists the valid task statuses.
var TaskStatuses = []string{TaskTodo, TaskInProgress, TaskBlocked, TaskDone}

// taskTransitions is the task workflow: from a status, the statuses a task
// may move to. Work is started before it is finished (todo -> done is not
// allowed: move it to in_progress first), any unfinished task can become
// blocked and be unblocked back to todo or in_progress, and a done task can
// only be reopened to in_progress. Setting the current status again is not a
// transition and always allowed.
var taskTransitions = map[string][]string{
	TaskTodo:       {TaskInProgress, TaskBlocked},
	TaskInProgress: {TaskTodo, TaskBlocked, TaskDone},
	TaskBlocked:    {TaskTodo, TaskInProgress},
	TaskDone:       {TaskInProgress},
}

// TaskTransitionAllowed reports whether the workflow lets a task move from
// one status to another.
func TaskTransitionAllowed(from, to string) bool {
	return from == to || slices.Contains(taskTransitions[from], to)
}

// Limits of the work area.
const (
	MaxTasksPerProject      = 10000
	MaxMilestonesPerProject = 1000
	MaxExpensesPerProject   = 100000
)

// Task is a unit of work in a project.
type Task struct {
	ID          uuid.UUID  `json:"id"`
	ProjectID   uuid.UUID  `json:"project_id"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Status      string     `json:"status"`
	AssigneeID  *uuid.UUID `json:"assignee_id"`
	DueDate     Date       `json:"due_date"`
	Overdue     bool       `json:"overdue"`
	DoneAt      *time.Time `json:"done_at"`
	CreatedBy   uuid.UUID  `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	Version     int64      `json:"-"`
	ETag        string     `json:"etag"`
}

// TaskInput creates a task. A nil AssigneeID leaves it unassigned.
type TaskInput struct {
	Title       string
	Description string
	Status      string
	AssigneeID  *uuid.UUID
	DueDate     Date
}

// TaskUpdate changes a task partially: nil fields stay as they are; a zero
// DueDate clears the due date and a uuid.Nil AssigneeID unassigns.
type TaskUpdate struct {
	Title       *string
	Description *string
	Status      *string
	AssigneeID  *uuid.UUID
	DueDate     *Date
}

// TaskFilter selects tasks of a project.
type TaskFilter struct {
	Status     string
	AssigneeID *uuid.UUID
	DueBefore  *Date
	Overdue    bool
	Query      string
	Limit      int
	Cursor     string
}

type taskRow struct {
	ID          uuid.UUID  `gorm:"column:id"`
	ProjectID   uuid.UUID  `gorm:"column:project_id"`
	Title       string     `gorm:"column:title"`
	Description string     `gorm:"column:description"`
	Status      string     `gorm:"column:status"`
	AssigneeID  *uuid.UUID `gorm:"column:assignee_id"`
	DueDate     *time.Time `gorm:"column:due_date"`
	Version     int64      `gorm:"column:version"`
	CreatedBy   uuid.UUID  `gorm:"column:created_by"`
	CreatedAt   time.Time  `gorm:"column:created_at"`
	UpdatedAt   time.Time  `gorm:"column:updated_at"`
	DoneAt      *time.Time `gorm:"column:done_at"`
}

const taskColumns = "id, project_id, title, description, status, assignee_id, due_date, version, created_by, created_at, updated_at, done_at"

func (r *taskRow) task(today Date) *Task {
	t := &Task{ID: r.ID, ProjectID: r.ProjectID, Title: r.Title, Description: r.Description, Status: r.Status,
		AssigneeID: r.AssigneeID, DueDate: dateFrom(r.DueDate), CreatedBy: r.CreatedBy,
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Version: r.Version, ETag: ETag(r.Version)}
	if r.DoneAt != nil {
		d := r.DoneAt.UTC()
		t.DoneAt = &d
	}
	t.Overdue = !t.DueDate.IsZero() && t.DueDate.Before(today) && t.Status != TaskDone
	return t
}

// TaskService manages the tasks of projects.
type TaskService struct {
	DB     *gorm.DB
	Now    func() time.Time
	Events EventSink
	Hooks  ValidationHooks
}

func (s *TaskService) today() Date { return todayOf(s.Now) }

func todayOf(now func() time.Time) Date {
	if now != nil {
		return DateOf(now())
	}
	return DateOf(time.Now())
}

func validateTask(v *Validator, title, description, status string) {
	v.Check(strings.TrimSpace(title) != "" && utf8.RuneCountInString(title) <= 200, "title", "must be 1-200 characters")
	v.Check(utf8.RuneCountInString(description) <= 10000, "description", "must be at most 10000 characters")
	v.Check(slices.Contains(TaskStatuses, status), "status", "must be one of "+strings.Join(TaskStatuses, ", "))
}

// liveProject reads a live project of the tenant, optionally locking its row
// ("SHARE" keeps it from being deleted or changed until the transaction
// ends; "NO KEY UPDATE" also serialises writers such as expenses). It
// returns ENOTFOUND for a missing or deleted project.
func liveProject(tx *gorm.DB, sc tenant.Scope, id uuid.UUID, lock string) (*projectRow, error) {
	q := "SELECT " + projectColumns + " FROM " + sc.Table("projects") + " WHERE id = ? AND deleted_at IS NULL"
	if lock != "" {
		q += " FOR " + lock
	}
	var rows []projectRow
	if err := tx.Raw(q, id).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("find project: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	return &rows[0], nil
}

// isMember reports whether user belongs to the tenant (public.memberships).
func isMember(tx *gorm.DB, tenantID, userID uuid.UUID) (bool, error) {
	var ok bool
	err := tx.Raw("SELECT EXISTS (SELECT 1 FROM public.memberships WHERE tenant_id = ? AND user_id = ?)", tenantID, userID).Scan(&ok).Error
	if err != nil {
		return false, fmt.Errorf("check membership: %w", err)
	}
	return ok, nil
}

func checkAssignee(tx *gorm.DB, sc tenant.Scope, id *uuid.UUID) error {
	if id == nil || *id == uuid.Nil {
		return nil
	}
	ok, err := isMember(tx, sc.ID, *id)
	if err != nil {
		return err
	}
	if !ok {
		return Invalid(FieldError{Field: "assignee_id", Message: "must be a member of the tenant"})
	}
	return nil
}

// domainErr returns err as is when it is an *Error (a rule the client broke)
// and wraps it with op otherwise.
func domainErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

func taskHookView(projectID uuid.UUID, id *uuid.UUID, title, description, status string, assignee *uuid.UUID, due Date) map[string]any {
	m := map[string]any{"project_id": projectID, "title": title, "description": description, "status": status,
		"assignee_id": assignee, "due_date": due}
	if id != nil {
		m["id"] = *id
	}
	return m
}

// Create adds a task to a live project. A new task starts as todo unless
// another status (not done: work is started before it is finished) is
// given. The task.validate hook runs before the transaction on the project
// as loaded; the transaction re-checks the project's version and runs the
// cycle again if it changed. It returns ENOTFOUND for a missing project,
// EINVALID for bad input (including an assignee who is not a member of the
// tenant, or too many tasks), EPLUGINREJECTED if a validation plugin refused
// it, and ECONFLICT if the project kept changing meanwhile.
func (s *TaskService) Create(ctx context.Context, sc tenant.Scope, actor Actor, projectID uuid.UUID, in TaskInput) (*Task, error) {
	if in.Status == "" {
		in.Status = TaskTodo
	}
	if in.AssigneeID != nil && *in.AssigneeID == uuid.Nil {
		in.AssigneeID = nil
	}
	var v Validator
	validateTask(&v, in.Title, in.Description, in.Status)
	v.Check(in.Status != TaskDone, "status", "a new task cannot be done: create it, then move it through in_progress")
	if err := v.Err(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	row := taskRow{ID: id, ProjectID: projectID, Title: in.Title, Description: in.Description, Status: in.Status,
		AssigneeID: in.AssigneeID, DueDate: datePtr(in.DueDate), Version: 1, CreatedBy: actor.UserID, CreatedAt: now, UpdatedAt: now}
	err = retryStale("the project", func() error {
		db := s.DB.WithContext(ctx)
		st, err := loadProjectState(db, sc, projectID, "")
		if err != nil {
			return err
		}
		if err := checkAssignee(db, sc, in.AssigneeID); err != nil {
			return err
		}
		if err := s.Hooks.validate(ctx, sc, ValidationRequest{Hook: HookTaskValidate, Operation: OpCreate,
			Input: taskHookView(projectID, nil, in.Title, in.Description, in.Status, in.AssigneeID, in.DueDate), Project: st.context()}); err != nil {
			return err
		}
		return sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
			p, err := liveProject(tx, sc, projectID, "SHARE")
			if err != nil {
				return err
			}
			if p.Version != st.row.Version {
				return errStale
			}
			if err := checkAssignee(tx, sc, in.AssigneeID); err != nil {
				return err
			}
			var n int64
			if err := tx.Table(sc.Table("tasks")).Where("project_id = ? AND deleted_at IS NULL", projectID).Count(&n).Error; err != nil {
				return err
			}
			if n >= MaxTasksPerProject {
				return Invalid(FieldError{Field: "project", Message: fmt.Sprintf("a project holds at most %d tasks", MaxTasksPerProject)})
			}
			if err := tx.Table(sc.Table("tasks")).Create(&row).Error; err != nil {
				return err
			}
			return RecordAudit(tx, sc, actor, "task.create", "task", id.String(), OutcomeSuccess,
				map[string]any{"project_id": projectID, "title": in.Title, "status": in.Status})
		})
	})
	if err != nil {
		return nil, domainErr("create task", err)
	}
	return row.task(s.today()), nil
}

// Get returns a live task of a live project. It returns ENOTFOUND if either
// does not exist in the tenant.
func (s *TaskService) Get(ctx context.Context, sc tenant.Scope, projectID, id uuid.UUID) (*Task, error) {
	// One round trip: the join proves the project is live.
	var rows []taskRow
	err := s.DB.WithContext(ctx).Raw("SELECT t."+strings.ReplaceAll(taskColumns, ", ", ", t.")+" FROM "+sc.Table("tasks")+" t JOIN "+
		sc.Table("projects")+" p ON p.id = t.project_id AND p.deleted_at IS NULL WHERE t.id = ? AND t.project_id = ? AND t.deleted_at IS NULL",
		id, projectID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("get task: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "task not found"}
	}
	return rows[0].task(s.today()), nil
}

// nullableTaskRow is a task row of a LEFT JOIN from its project: a project
// without matching tasks yields one row whose task columns are NULL.
type nullableTaskRow struct {
	ID          *uuid.UUID `gorm:"column:id"`
	ProjectID   *uuid.UUID `gorm:"column:project_id"`
	Title       *string    `gorm:"column:title"`
	Description *string    `gorm:"column:description"`
	Status      *string    `gorm:"column:status"`
	AssigneeID  *uuid.UUID `gorm:"column:assignee_id"`
	DueDate     *time.Time `gorm:"column:due_date"`
	Version     *int64     `gorm:"column:version"`
	CreatedBy   *uuid.UUID `gorm:"column:created_by"`
	CreatedAt   *time.Time `gorm:"column:created_at"`
	UpdatedAt   *time.Time `gorm:"column:updated_at"`
	DoneAt      *time.Time `gorm:"column:done_at"`
}

// List returns the live tasks of a live project, newest first. It returns
// ENOTFOUND for a missing project and EINVALID for a bad filter.
func (s *TaskService) List(ctx context.Context, sc tenant.Scope, projectID uuid.UUID, f TaskFilter) (*Page[Task], error) {
	limit := ClampLimit(f.Limit)
	today := s.today()
	conds := []string{"t.project_id = p.id", "t.deleted_at IS NULL"}
	var args []any
	if f.Status != "" {
		if !slices.Contains(TaskStatuses, f.Status) {
			return nil, Invalid(FieldError{Field: "status", Message: "must be one of " + strings.Join(TaskStatuses, ", ")})
		}
		conds, args = append(conds, "t.status = ?"), append(args, f.Status)
	}
	if f.AssigneeID != nil {
		conds, args = append(conds, "t.assignee_id = ?"), append(args, *f.AssigneeID)
	}
	if f.DueBefore != nil {
		conds, args = append(conds, "t.due_date < ?::date"), append(args, f.DueBefore.String())
	}
	if f.Overdue {
		conds, args = append(conds, "t.due_date < ?::date AND t.status <> 'done'"), append(args, today.String())
	}
	if f.Query != "" {
		if utf8.RuneCountInString(f.Query) > 200 {
			return nil, Invalid(FieldError{Field: "q", Message: "must be at most 200 characters"})
		}
		conds, args = append(conds, "t.search @@ websearch_to_tsquery('simple', ?)"), append(args, f.Query)
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		conds, args = append(conds, "t.id < ?"), append(args, id)
	}
	// One round trip: zero rows means no such project; a project without
	// matching tasks gives one row of NULLs.
	q := "SELECT t." + strings.ReplaceAll(taskColumns, ", ", ", t.") + " FROM " + sc.Table("projects") + " p LEFT JOIN " +
		sc.Table("tasks") + " t ON " + strings.Join(conds, " AND ") +
		" WHERE p.id = ? AND p.deleted_at IS NULL ORDER BY t.id DESC LIMIT ?"
	args = append(args, projectID, limit+1)
	var rows []nullableTaskRow
	if err := s.DB.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	items := make([]Task, 0, len(rows))
	for _, r := range rows {
		if r.ID == nil {
			continue
		}
		row := taskRow{ID: *r.ID, ProjectID: *r.ProjectID, Title: *r.Title, Description: *r.Description, Status: *r.Status,
			AssigneeID: r.AssigneeID, DueDate: r.DueDate, Version: *r.Version, CreatedBy: *r.CreatedBy,
			CreatedAt: *r.CreatedAt, UpdatedAt: *r.UpdatedAt, DoneAt: r.DoneAt}
		items = append(items, *row.task(today))
	}
	return pageOf(items, limit, func(t Task) uuid.UUID { return t.ID }), nil
}

// Update applies a partial update if the task is still at version ifMatch.
// Status changes follow the workflow (TaskTransitionAllowed); a task that
// becomes done emits task.done. The task.validate hook runs before the
// transaction on the task and project as loaded; the transaction applies
// the change only if the task is still at that version (else
// EPRECONDITION) and runs the cycle again if the project changed. It
// returns ENOTFOUND, EPRECONDITION (stale version), EINVALID (bad input, a
// transition the workflow forbids, an assignee who is not a member),
// EPLUGINREJECTED or ECONFLICT.
func (s *TaskService) Update(ctx context.Context, sc tenant.Scope, actor Actor, projectID, id uuid.UUID, ifMatch int64, u TaskUpdate) (*Task, error) {
	var out *Task
	today := s.today()
	stale := &Error{Code: EPRECONDITION, Message: "the task has changed since you read it (ETag mismatch)"}
	err := retryStale("the project", func() error {
		db := s.DB.WithContext(ctx)
		st, err := loadProjectState(db, sc, projectID, "")
		if err != nil {
			return err
		}
		var rows []taskRow
		if err := db.Raw("SELECT "+taskColumns+" FROM "+sc.Table("tasks")+" WHERE id = ? AND project_id = ? AND deleted_at IS NULL",
			id, projectID).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return &Error{Code: ENOTFOUND, Message: "task not found"}
		}
		row := rows[0]
		if row.Version != ifMatch {
			return stale
		}
		before := row.task(today)
		changed := map[string]any{}
		if u.Title != nil && *u.Title != row.Title {
			row.Title, changed["title"] = *u.Title, *u.Title
		}
		if u.Description != nil && *u.Description != row.Description {
			row.Description, changed["description"] = *u.Description, *u.Description
		}
		if u.Status != nil && *u.Status != row.Status {
			row.Status, changed["status"] = *u.Status, *u.Status
		}
		if u.AssigneeID != nil {
			var a *uuid.UUID
			if *u.AssigneeID != uuid.Nil {
				a = u.AssigneeID
			}
			if !sameUUID(a, row.AssigneeID) {
				row.AssigneeID, changed["assignee_id"] = a, a
			}
		}
		if u.DueDate != nil && !dateFrom(row.DueDate).Time().Equal(u.DueDate.Time()) {
			row.DueDate, changed["due_date"] = datePtr(*u.DueDate), datePtr(*u.DueDate)
		}
		var v Validator
		validateTask(&v, row.Title, row.Description, row.Status)
		if err := v.Err(); err != nil {
			return err
		}
		if !TaskTransitionAllowed(before.Status, row.Status) {
			return Invalid(FieldError{Field: "status", Message: fmt.Sprintf("a task cannot move from %s to %s (allowed: %s)",
				before.Status, row.Status, strings.Join(taskTransitions[before.Status], ", "))})
		}
		if len(changed) == 0 {
			out = before
			return nil
		}
		_, assigneeChanged := changed["assignee_id"]
		if assigneeChanged {
			if err := checkAssignee(db, sc, row.AssigneeID); err != nil {
				return err
			}
		}
		if err := s.Hooks.validate(ctx, sc, ValidationRequest{Hook: HookTaskValidate, Operation: OpUpdate,
			Input:   taskHookView(projectID, &id, row.Title, row.Description, row.Status, row.AssigneeID, dateFrom(row.DueDate)),
			Current: taskHookView(projectID, &id, before.Title, before.Description, before.Status, before.AssigneeID, before.DueDate),
			Project: st.context()}); err != nil {
			return err
		}
		return sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
			p, err := liveProject(tx, sc, projectID, "SHARE")
			if err != nil {
				return err
			}
			var versions []int64
			if err := tx.Raw("SELECT version FROM "+sc.Table("tasks")+" WHERE id = ? AND project_id = ? AND deleted_at IS NULL FOR UPDATE",
				id, projectID).Scan(&versions).Error; err != nil {
				return err
			}
			if len(versions) == 0 {
				return &Error{Code: ENOTFOUND, Message: "task not found"}
			}
			if versions[0] != ifMatch {
				return stale
			}
			if p.Version != st.row.Version {
				return errStale
			}
			if assigneeChanged {
				if err := checkAssignee(tx, sc, row.AssigneeID); err != nil {
					return err
				}
			}
			now := time.Now().UTC()
			becameDone := before.Status != TaskDone && row.Status == TaskDone
			if becameDone {
				row.DoneAt = &now
				changed["done_at"] = now
			} else if before.Status == TaskDone && row.Status != TaskDone {
				row.DoneAt = nil
				changed["done_at"] = nil
			}
			audit := make(map[string]any, len(changed))
			for k, v := range changed {
				audit[k] = v
			}
			changed["version"] = gorm.Expr("version + 1")
			changed["updated_at"] = now
			if err := tx.Table(sc.Table("tasks")).Where("id = ?", id).Updates(changed).Error; err != nil {
				return err
			}
			row.Version++
			row.UpdatedAt = now
			out = row.task(today)
			if err := RecordAudit(tx, sc, actor, "task.update", "task", id.String(), OutcomeSuccess, audit); err != nil {
				return err
			}
			if becameDone {
				return s.Events.emit(tx, sc, actor, EventTaskDone, id.String(), out)
			}
			return nil
		})
	})
	if err != nil {
		return nil, domainErr("update task", err)
	}
	return out, nil
}

// Delete soft-deletes a task. It returns ENOTFOUND if the task or its
// project does not exist in the tenant.
func (s *TaskService) Delete(ctx context.Context, sc tenant.Scope, actor Actor, projectID, id uuid.UUID) error {
	return softDeleteProjectChild(ctx, s.DB, sc, actor, "tasks", "task", projectID, id)
}

func sameUUID(a, b *uuid.UUID) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
