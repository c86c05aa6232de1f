package api

import (
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/promanage/promanage/core"
)

func (s *Server) projectPath(c *fiber.Ctx, id uuid.UUID) string {
	return "/v1/tenants/" + currentTenant(c).Slug + "/projects/" + id.String()
}

func queryBool(c *fiber.Ctx, name string) (bool, error) {
	switch c.Query(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, core.Invalid(core.FieldError{Field: name, Message: "must be true or false"})
}

func queryDate(c *fiber.Ctx, name string) (*core.Date, error) {
	v := c.Query(name)
	if v == "" {
		return nil, nil
	}
	d, err := core.ParseDate(v)
	if err != nil {
		return nil, core.Invalid(core.FieldError{Field: name, Message: err.Error()})
	}
	return &d, nil
}

// Tasks.

func (s *Server) createTask(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "title", "description", "status", "assignee_id", "due_date")
	if err != nil {
		return err
	}
	var in core.TaskInput
	var errs []core.FieldError
	field(m, "title", &in.Title, &errs)
	field(m, "description", &in.Description, &errs)
	field(m, "status", &in.Status, &errs)
	field(m, "assignee_id", &in.AssigneeID, &errs)
	field(m, "due_date", &in.DueDate, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	t, err := s.d.Work.Tasks.Create(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, in)
	if err != nil {
		return err
	}
	c.Location(s.projectPath(c, pid) + "/tasks/" + t.ID.String())
	c.Set(fiber.HeaderETag, t.ETag)
	return c.Status(fiber.StatusCreated).JSON(t)
}

func (s *Server) listTasks(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := core.TaskFilter{Status: c.Query("status"), Query: c.Query("q"), Limit: limit, Cursor: c.Query("cursor")}
	if v := c.Query("assignee"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return core.Invalid(core.FieldError{Field: "assignee", Message: "must be a user id (UUID)"})
		}
		f.AssigneeID = &id
	}
	if f.DueBefore, err = queryDate(c, "due_before"); err != nil {
		return err
	}
	if f.Overdue, err = queryBool(c, "overdue"); err != nil {
		return err
	}
	page, err := s.d.Work.Tasks.List(c.UserContext(), currentTenant(c).Scope(), pid, f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) getTask(c *fiber.Ctx) error {
	pid, id, err := projectChild(c, "task_id", "task")
	if err != nil {
		return err
	}
	t, err := s.d.Work.Tasks.Get(c.UserContext(), currentTenant(c).Scope(), pid, id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, t.ETag)
	return c.JSON(t)
}

func (s *Server) patchTask(c *fiber.Ctx) error {
	pid, id, err := projectChild(c, "task_id", "task")
	if err != nil {
		return err
	}
	version, err := ifMatch(c)
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "title", "description", "status", "assignee_id", "due_date")
	if err != nil {
		return err
	}
	var u core.TaskUpdate
	var errs []core.FieldError
	var title, desc, status string
	var assignee *uuid.UUID
	var due core.Date
	if field(m, "title", &title, &errs) {
		u.Title = &title
	}
	if field(m, "description", &desc, &errs) {
		u.Description = &desc
	}
	if field(m, "status", &status, &errs) {
		u.Status = &status
	}
	if field(m, "assignee_id", &assignee, &errs) {
		if assignee == nil {
			assignee = &uuid.Nil // null unassigns
		}
		u.AssigneeID = assignee
	}
	if field(m, "due_date", &due, &errs) {
		u.DueDate = &due
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	t, err := s.d.Work.Tasks.Update(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, id, version, u)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, t.ETag)
	return c.JSON(t)
}

func (s *Server) deleteTask(c *fiber.Ctx) error {
	return deleteProjectChild(c, "task_id", "task", s.d.Work.Tasks.Delete)
}

// Milestones.

func (s *Server) createMilestone(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "name", "due_date", "done")
	if err != nil {
		return err
	}
	var in core.MilestoneInput
	var errs []core.FieldError
	field(m, "name", &in.Name, &errs)
	field(m, "due_date", &in.DueDate, &errs)
	field(m, "done", &in.Done, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	ms, err := s.d.Work.Milestones.Create(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, in)
	if err != nil {
		return err
	}
	c.Location(s.projectPath(c, pid) + "/milestones/" + ms.ID.String())
	c.Set(fiber.HeaderETag, ms.ETag)
	return c.Status(fiber.StatusCreated).JSON(ms)
}

func (s *Server) listMilestones(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	items, err := s.d.Work.Milestones.List(c.UserContext(), currentTenant(c).Scope(), pid)
	if err != nil {
		return err
	}
	return c.JSON(core.Page[core.Milestone]{Items: items})
}

func (s *Server) getMilestone(c *fiber.Ctx) error {
	pid, id, err := projectChild(c, "milestone_id", "milestone")
	if err != nil {
		return err
	}
	ms, err := s.d.Work.Milestones.Get(c.UserContext(), currentTenant(c).Scope(), pid, id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, ms.ETag)
	return c.JSON(ms)
}

func (s *Server) patchMilestone(c *fiber.Ctx) error {
	pid, id, err := projectChild(c, "milestone_id", "milestone")
	if err != nil {
		return err
	}
	version, err := ifMatch(c)
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "name", "due_date", "done")
	if err != nil {
		return err
	}
	var u core.MilestoneUpdate
	var errs []core.FieldError
	var name string
	var due core.Date
	var done bool
	if field(m, "name", &name, &errs) {
		u.Name = &name
	}
	if field(m, "due_date", &due, &errs) {
		u.DueDate = &due
	}
	if field(m, "done", &done, &errs) {
		u.Done = &done
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	ms, err := s.d.Work.Milestones.Update(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, id, version, u)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, ms.ETag)
	return c.JSON(ms)
}

func (s *Server) deleteMilestone(c *fiber.Ctx) error {
	return deleteProjectChild(c, "milestone_id", "milestone", s.d.Work.Milestones.Delete)
}
