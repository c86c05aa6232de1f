package api

import (
	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/core"
)

var projectWritable = []string{"key", "name", "description", "status", "start_date", "deadline", "budget"}

func (s *Server) createProject(c *fiber.Ctx) error {
	m, err := decodeObject(c, projectWritable...)
	if err != nil {
		return err
	}
	var in core.ProjectInput
	var errs []core.FieldError
	field(m, "key", &in.Key, &errs)
	field(m, "name", &in.Name, &errs)
	field(m, "description", &in.Description, &errs)
	field(m, "status", &in.Status, &errs)
	field(m, "start_date", &in.StartDate, &errs)
	field(m, "deadline", &in.Deadline, &errs)
	field(m, "budget", &in.Budget, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	p, err := s.d.Projects.Create(c.UserContext(), currentTenant(c).Scope(), actor(c), in)
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + currentTenant(c).Slug + "/projects/" + p.ID.String())
	c.Set(fiber.HeaderETag, p.ETag)
	return c.Status(fiber.StatusCreated).JSON(p)
}

func (s *Server) listProjects(c *fiber.Ctx) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := core.ProjectFilter{Status: c.Query("status"), Query: c.Query("q"), Limit: limit, Cursor: c.Query("cursor")}
	switch c.Query("overdue") {
	case "", "false":
	case "true":
		f.Overdue = true
	default:
		return core.Invalid(core.FieldError{Field: "overdue", Message: "must be true or false"})
	}
	if v := c.Query("deadline_before"); v != "" {
		d, err := core.ParseDate(v)
		if err != nil {
			return core.Invalid(core.FieldError{Field: "deadline_before", Message: err.Error()})
		}
		f.DeadlineBefore = &d
	}
	page, err := s.d.Projects.List(c.UserContext(), currentTenant(c).Scope(), f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) getProject(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	p, err := s.d.Projects.Get(c.UserContext(), currentTenant(c).Scope(), id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, p.ETag)
	return c.JSON(p)
}

func (s *Server) patchProject(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	version, err := ifMatch(c)
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "name", "description", "status", "start_date", "deadline", "budget")
	if err != nil {
		return err
	}
	var u core.ProjectUpdate
	var errs []core.FieldError
	var name, desc, status string
	var start, deadline core.Date
	var budget core.Money
	if field(m, "name", &name, &errs) {
		u.Name = &name
	}
	if field(m, "description", &desc, &errs) {
		u.Description = &desc
	}
	if field(m, "status", &status, &errs) {
		u.Status = &status
	}
	if field(m, "start_date", &start, &errs) {
		u.StartDate = &start
	}
	if field(m, "deadline", &deadline, &errs) {
		u.Deadline = &deadline
	}
	if raw, ok := m["budget"]; ok && string(raw) == "null" {
		errs = append(errs, core.FieldError{Field: "budget", Message: "cannot be removed; set amount_minor to 0"})
	} else if field(m, "budget", &budget, &errs) {
		u.Budget = &budget
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	p, err := s.d.Projects.Update(c.UserContext(), currentTenant(c).Scope(), actor(c), id, version, u)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, p.ETag)
	return c.JSON(p)
}

func (s *Server) deleteProject(c *fiber.Ctx) error {
	id, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	if err := s.d.Projects.Delete(c.UserContext(), currentTenant(c).Scope(), actor(c), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
