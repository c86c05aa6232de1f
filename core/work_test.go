package core_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// workTenant provisions a tenant on db whose owner is a new user.
func workTenant(t testing.TB, db *gorm.DB) (*tenant.Tenant, core.Actor) {
	t.Helper()
	owner := uuid.New()
	reg := tenant.NewRegistry(db, nil)
	tn, err := reg.Provision(context.Background(), tenant.ProvisionParams{Slug: testenv.Slug("work"), Name: "Work",
		Seed: func(tx *gorm.DB, tn *tenant.Tenant) error { return addMemberTx(tx, tn.ID, owner, "owner") }})
	if err != nil {
		t.Fatal(err)
	}
	return tn, core.Actor{UserID: owner, RequestID: "test"}
}

func addMemberTx(tx *gorm.DB, tenantID, userID uuid.UUID, role string) error {
	if err := tx.Exec("INSERT INTO public.users (id, email) VALUES (?, ?) ON CONFLICT DO NOTHING", userID, userID.String()+"@example.com").Error; err != nil {
		return err
	}
	return tx.Exec("INSERT INTO public.memberships (tenant_id, user_id, role) VALUES (?, ?, ?)", tenantID, userID, role).Error
}

func addMember(t *testing.T, db *gorm.DB, tenantID uuid.UUID, role string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if err := addMemberTx(db, tenantID, id, role); err != nil {
		t.Fatal(err)
	}
	return id
}

func mustDate(t *testing.T, s string) core.Date {
	t.Helper()
	d, err := core.ParseDate(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newProject(t testing.TB, db *gorm.DB, sc tenant.Scope, actor core.Actor, in core.ProjectInput) *core.Project {
	t.Helper()
	if in.Key == "" {
		in.Key = "P" + strings.ToUpper(uuid.NewString()[:6])
	}
	if in.Name == "" {
		in.Name = "Project"
	}
	ps := &core.ProjectService{DB: db}
	p, err := ps.Create(context.Background(), sc, actor, in)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if core.ErrorCode(err) != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
}

func countEvents(t *testing.T, db *gorm.DB, tenantID uuid.UUID, typ string) int {
	t.Helper()
	var n int64
	if err := db.Table("public.outbox").Where("tenant_id = ? AND type = ?", tenantID, typ).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func TestTasks(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "TSK"})
	member := addMember(t, db, tn.ID, "member")
	stranger := uuid.New()
	s := &core.TaskService{DB: db, Now: func() time.Time { return time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC) }}

	t.Run("AssigneeMustBeMember", func(t *testing.T) {
		_, err := s.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "x", AssigneeID: &stranger})
		wantCode(t, err, core.EINVALID)
		var e *core.Error
		if !errors.As(err, &e) || len(e.Fields) != 1 || e.Fields[0].Field != "assignee_id" {
			t.Fatalf("error %v does not name assignee_id", err)
		}
	})
	t.Run("BadInput", func(t *testing.T) {
		for _, in := range []core.TaskInput{{Title: ""}, {Title: "x", Status: "nope"}, {Title: "x", Status: core.TaskDone}} {
			_, err := s.Create(ctx, sc, owner, p.ID, in)
			wantCode(t, err, core.EINVALID)
		}
	})

	late, err := s.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "Write the launch copy", AssigneeID: &member, DueDate: mustDate(t, "2030-05-01")})
	if err != nil {
		t.Fatal(err)
	}
	if late.Status != core.TaskTodo || !late.Overdue || late.ETag != `"1"` {
		t.Fatalf("new task: %+v", late)
	}
	later, err := s.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "Deploy the servers", DueDate: mustDate(t, "2030-07-01")})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("Transitions", func(t *testing.T) {
		done := core.TaskDone
		_, err := s.Update(ctx, sc, owner, p.ID, late.ID, 1, core.TaskUpdate{Status: &done})
		wantCode(t, err, core.EINVALID) // todo -> done skips in_progress
		ip := core.TaskInProgress
		got, err := s.Update(ctx, sc, owner, p.ID, late.ID, 1, core.TaskUpdate{Status: &ip})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Update(ctx, sc, owner, p.ID, late.ID, 1, core.TaskUpdate{Status: &done})
		wantCode(t, err, core.EPRECONDITION)
		before := countEvents(t, db, tn.ID, core.EventTaskDone)
		got, err = s.Update(ctx, sc, owner, p.ID, late.ID, 2, core.TaskUpdate{Status: &done})
		if err != nil {
			t.Fatal(err)
		}
		if got.DoneAt == nil || got.Overdue || got.ETag != `"3"` {
			t.Fatalf("done task: %+v", got)
		}
		if n := countEvents(t, db, tn.ID, core.EventTaskDone); n != before+1 {
			t.Fatalf("task.done events: %d, want %d", n, before+1)
		}
		todo := core.TaskTodo
		_, err = s.Update(ctx, sc, owner, p.ID, late.ID, 3, core.TaskUpdate{Status: &todo})
		wantCode(t, err, core.EINVALID) // done reopens to in_progress only
		for from, tos := range map[string][]string{core.TaskTodo: {core.TaskInProgress, core.TaskBlocked}, core.TaskBlocked: {core.TaskTodo, core.TaskInProgress}} {
			for _, to := range tos {
				if !core.TaskTransitionAllowed(from, to) {
					t.Errorf("%s -> %s refused", from, to)
				}
			}
		}
	})
	t.Run("Unassign", func(t *testing.T) {
		nobody := uuid.Nil
		got, err := s.Update(ctx, sc, owner, p.ID, late.ID, 3, core.TaskUpdate{AssigneeID: &nobody})
		if err != nil {
			t.Fatal(err)
		}
		if got.AssigneeID != nil {
			t.Fatalf("still assigned: %+v", got)
		}
		_, err = s.Update(ctx, sc, owner, p.ID, later.ID, 1, core.TaskUpdate{AssigneeID: &stranger})
		wantCode(t, err, core.EINVALID)
	})
	t.Run("Filters", func(t *testing.T) {
		count := func(f core.TaskFilter) int {
			t.Helper()
			page, err := s.List(ctx, sc, p.ID, f)
			if err != nil {
				t.Fatal(err)
			}
			return len(page.Items)
		}
		if n := count(core.TaskFilter{}); n != 2 {
			t.Fatalf("all: %d", n)
		}
		if n := count(core.TaskFilter{Status: core.TaskDone}); n != 1 {
			t.Fatalf("done: %d", n)
		}
		if n := count(core.TaskFilter{Query: "servers"}); n != 1 {
			t.Fatalf("q=servers: %d", n)
		}
		d := mustDate(t, "2030-06-01")
		if n := count(core.TaskFilter{DueBefore: &d}); n != 1 {
			t.Fatalf("due_before: %d", n)
		}
		if n := count(core.TaskFilter{Overdue: true}); n != 0 { // the late one is done
			t.Fatalf("overdue: %d", n)
		}
		if n := count(core.TaskFilter{Limit: 1}); n != 1 {
			t.Fatalf("limit: %d", n)
		}
		page, _ := s.List(ctx, sc, p.ID, core.TaskFilter{Limit: 1})
		next, err := s.List(ctx, sc, p.ID, core.TaskFilter{Limit: 1, Cursor: page.NextCursor})
		if err != nil || len(next.Items) != 1 || next.Items[0].ID == page.Items[0].ID {
			t.Fatalf("second page: %+v %v", next, err)
		}
		_, err = s.List(ctx, sc, p.ID, core.TaskFilter{Status: "bogus"})
		wantCode(t, err, core.EINVALID)
	})
	t.Run("EmptyProjectListsNothing", func(t *testing.T) {
		q := newProject(t, db, sc, owner, core.ProjectInput{Key: "EMPTY"})
		page, err := s.List(ctx, sc, q.ID, core.TaskFilter{})
		if err != nil || len(page.Items) != 0 {
			t.Fatalf("%+v %v", page, err)
		}
	})
	t.Run("DeleteAndAudit", func(t *testing.T) {
		if err := s.Delete(ctx, sc, owner, p.ID, later.ID); err != nil {
			t.Fatal(err)
		}
		_, err := s.Get(ctx, sc, p.ID, later.ID)
		wantCode(t, err, core.ENOTFOUND)
		wantCode(t, s.Delete(ctx, sc, owner, p.ID, later.ID), core.ENOTFOUND)
		var actions []string
		db.Table(sc.Table("audit_log")).Where("object_type = 'task'").Order("id").Pluck("action", &actions)
		if len(actions) < 5 || actions[0] != "task.create" || actions[len(actions)-1] != "task.delete" {
			t.Fatalf("audit: %v", actions)
		}
	})
	t.Run("DeletedOrForeignProjectIsNotFound", func(t *testing.T) {
		other, otherOwner := workTenant(t, db)
		foreign := newProject(t, db, other.Scope(), otherOwner, core.ProjectInput{Key: "FOR"})
		gone := newProject(t, db, sc, owner, core.ProjectInput{Key: "GONE"})
		if err := (&core.ProjectService{DB: db}).Delete(ctx, sc, owner, gone.ID); err != nil {
			t.Fatal(err)
		}
		for _, id := range []uuid.UUID{foreign.ID, gone.ID} {
			_, err := s.Create(ctx, sc, owner, id, core.TaskInput{Title: "x"})
			wantCode(t, err, core.ENOTFOUND)
			_, err = s.List(ctx, sc, id, core.TaskFilter{})
			wantCode(t, err, core.ENOTFOUND)
			_, err = (&core.MilestoneService{DB: db}).List(ctx, sc, id)
			wantCode(t, err, core.ENOTFOUND)
			_, err = (&core.BudgetService{DB: db}).Get(ctx, sc, id)
			wantCode(t, err, core.ENOTFOUND)
		}
		// A task id of the right project but asked through another tenant.
		_, err := s.Get(ctx, other.Scope(), p.ID, late.ID)
		wantCode(t, err, core.ENOTFOUND)
	})
}

func TestMilestones(t *testing.T) {
	db := testenv.DB(t)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	p := newProject(t, db, sc, owner, core.ProjectInput{Key: "MS"})
	s := &core.MilestoneService{DB: db, Now: func() time.Time { return time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC) }}
	empty, err := s.List(ctx, sc, p.ID)
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty: %v %v", empty, err)
	}
	_, err = s.Create(ctx, sc, owner, p.ID, core.MilestoneInput{Name: " "})
	wantCode(t, err, core.EINVALID)
	beta, err := s.Create(ctx, sc, owner, p.ID, core.MilestoneInput{Name: "Beta", DueDate: mustDate(t, "2030-07-01")})
	if err != nil {
		t.Fatal(err)
	}
	alpha, err := s.Create(ctx, sc, owner, p.ID, core.MilestoneInput{Name: "Alpha", DueDate: mustDate(t, "2030-05-01")})
	if err != nil {
		t.Fatal(err)
	}
	if !alpha.Overdue || beta.Overdue {
		t.Fatalf("overdue flags: %+v %+v", alpha, beta)
	}
	list, err := s.List(ctx, sc, p.ID)
	if err != nil || len(list) != 2 || list[0].Name != "Alpha" {
		t.Fatalf("list by due date: %+v %v", list, err)
	}
	done := true
	_, err = s.Update(ctx, sc, owner, p.ID, alpha.ID, 7, core.MilestoneUpdate{Done: &done})
	wantCode(t, err, core.EPRECONDITION)
	got, err := s.Update(ctx, sc, owner, p.ID, alpha.ID, 1, core.MilestoneUpdate{Done: &done})
	if err != nil || !got.Done || got.Overdue || got.ETag != `"2"` {
		t.Fatalf("update: %+v %v", got, err)
	}
	proj, err := (&core.ProjectService{DB: db}).Get(ctx, sc, p.ID)
	if err != nil || proj.Progress.MilestonesTotal != 2 || proj.Progress.MilestonesMet != 1 {
		t.Fatalf("progress: %+v %v", proj.Progress, err)
	}
	if err := s.Delete(ctx, sc, owner, p.ID, beta.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, sc, p.ID, beta.ID)
	wantCode(t, err, core.ENOTFOUND)
}
