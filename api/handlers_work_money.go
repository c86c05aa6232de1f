package api

import (
	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/core"
)

// Expenses and budget.

func (s *Server) createExpense(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "amount_minor", "currency", "category", "spent_on", "note")
	if err != nil {
		return err
	}
	var in core.ExpenseInput
	var errs []core.FieldError
	if !field(m, "amount_minor", &in.AmountMinor, &errs) && m["amount_minor"] == nil {
		errs = append(errs, core.FieldError{Field: "amount_minor", Message: "is required (a positive integer of minor units)"})
	}
	if !field(m, "currency", &in.Currency, &errs) && m["currency"] == nil {
		errs = append(errs, core.FieldError{Field: "currency", Message: "is required (the project's budget currency)"})
	}
	field(m, "category", &in.Category, &errs)
	field(m, "spent_on", &in.SpentOn, &errs)
	field(m, "note", &in.Note, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	e, err := s.d.Work.Expenses.Create(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, in)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, e.ETag)
	return c.Status(fiber.StatusCreated).JSON(e)
}

func (s *Server) listExpenses(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := core.ExpenseFilter{Category: c.Query("category"), Limit: limit, Cursor: c.Query("cursor")}
	if f.SpentFrom, err = queryDate(c, "spent_from"); err != nil {
		return err
	}
	if f.SpentTo, err = queryDate(c, "spent_to"); err != nil {
		return err
	}
	page, err := s.d.Work.Expenses.List(c.UserContext(), currentTenant(c).Scope(), pid, f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) deleteExpense(c *fiber.Ctx) error {
	return deleteProjectChild(c, "expense_id", "expense", s.d.Work.Expenses.Delete)
}

func (s *Server) getBudget(c *fiber.Ctx) error {
	pid, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	b, err := s.d.Work.Budget.Get(c.UserContext(), currentTenant(c).Scope(), pid)
	if err != nil {
		return err
	}
	return c.JSON(b)
}

// Events.

func (s *Server) listEvents(c *fiber.Ctx) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := core.EventFilter{Type: c.Query("type"), State: c.Query("state"), Limit: limit, Cursor: c.Query("cursor")}
	page, err := s.d.Work.Events.List(c.UserContext(), currentTenant(c).ID, f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) replayEvent(c *fiber.Ctx) error {
	id, err := pathUUID(c, "event_id", "event")
	if err != nil {
		return err
	}
	e, n, err := s.d.Work.Events.Replay(c.UserContext(), currentTenant(c).Scope(), actor(c), id)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"event": e, "requeued": n})
}
