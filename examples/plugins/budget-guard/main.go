// Command budget-guard is an example ProManage plugin (Go, built with the
// pdk as a WASI reactor). It rejects a project whose budget exceeds the cap
// in its config, and an expense that would push a project's spending past
// its planned budget or past the cap.
//
// Config: {"max_budget_minor": 1000000, "max_expense_minor": 50000}
// (max_expense_minor is optional: a cap on one expense).
package main

import (
	"errors"

	"github.com/promanage/promanage/plugins/pdk"
)

type config struct {
	MaxBudgetMinor  int64 `json:"max_budget_minor"`
	MaxExpenseMinor int64 `json:"max_expense_minor"`
}

func init() {
	pdk.OnValidate("project.validate", validateProject)
	pdk.OnValidate("expense.validate", validateExpense)
}

func loadConfig(in *pdk.ValidationInput) (config, error) {
	var c config
	if err := in.DecodeConfig(&c); err != nil {
		return c, err
	}
	if c.MaxBudgetMinor <= 0 {
		return c, errors.New("config: max_budget_minor must be a positive integer")
	}
	return c, nil
}

func validateProject(in *pdk.ValidationInput) (pdk.ValidationResult, error) {
	c, err := loadConfig(in)
	if err != nil {
		return pdk.ValidationResult{}, err
	}
	var p pdk.Project
	if err := in.DecodeInput(&p); err != nil {
		return pdk.ValidationResult{}, err
	}
	if p.Budget == nil {
		return pdk.Allow(), nil
	}
	if p.Budget.AmountMinor > c.MaxBudgetMinor {
		pdk.Logf(pdk.LevelInfo, "project %s: budget %d over cap %d", p.Key, p.Budget.AmountMinor, c.MaxBudgetMinor)
		return pdk.Rejectf("budget %s exceeds the cap of %s",
			format(p.Budget.AmountMinor, p.Budget.Currency), format(c.MaxBudgetMinor, p.Budget.Currency)), nil
	}
	return pdk.Allow(), nil
}

func validateExpense(in *pdk.ValidationInput) (pdk.ValidationResult, error) {
	c, err := loadConfig(in)
	if err != nil {
		return pdk.ValidationResult{}, err
	}
	var e pdk.Expense
	if err := in.DecodeInput(&e); err != nil {
		return pdk.ValidationResult{}, err
	}
	if c.MaxExpenseMinor > 0 && e.AmountMinor > c.MaxExpenseMinor {
		return pdk.Rejectf("expense %s exceeds the per-expense cap of %s",
			format(e.AmountMinor, e.Currency), format(c.MaxExpenseMinor, e.Currency)), nil
	}
	if in.Project == nil || in.Project.BudgetSummary == nil {
		return pdk.Allow(), nil
	}
	s := in.Project.BudgetSummary
	spent := s.Spent
	if in.Operation == "update" {
		var old pdk.Expense
		if ok, err := in.DecodeCurrent(&old); err != nil {
			return pdk.ValidationResult{}, err
		} else if ok {
			spent -= old.AmountMinor // the old amount is replaced, not added to
		}
	}
	limit := c.MaxBudgetMinor
	if s.Planned > 0 && s.Planned < limit {
		limit = s.Planned
	}
	if total := spent + e.AmountMinor; total > limit {
		return pdk.Rejectf("expense would bring spending on %s to %s, over the budget of %s",
			in.Project.Key, format(total, s.Currency), format(limit, s.Currency)), nil
	}
	return pdk.Allow(), nil
}

// format renders minor units as "12345.67 EUR" (2 decimals: an example, not
// an ISO 4217 table).
func format(minor int64, currency string) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	cents := minor % 100
	s := sign + itoa(minor/100) + "."
	if cents < 10 {
		s += "0"
	}
	s += itoa(cents)
	if currency != "" {
		s += " " + currency
	}
	return s
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

func main() {}
