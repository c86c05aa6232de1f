package main

import (
	"context"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/tenant"
)

// workDeps wires the work area's services into the API.
func (a *app) workDeps() api.WorkDeps {
	hooks := a.validationHooks()
	return api.WorkDeps{
		Tasks:      &core.TaskService{DB: a.db, Events: a.events, Hooks: hooks},
		Milestones: &core.MilestoneService{DB: a.db},
		Expenses:   &core.ExpenseService{DB: a.db, Events: a.events, Hooks: hooks, Queue: &core.WriteQueue{Wait: a.cfg.WriteQueueWait}},
		Budget:     &core.BudgetService{DB: a.db},
		Events:     &core.EventService{DB: a.db},
	}
}

// workConsumers are the work area's outbox consumers (by name). The work
// area produces events; the notification consumer belongs to plugins.
func (a *app) workConsumers() map[string]core.Consumer { return nil }

// workJobs are the work area's background jobs run by the worker: the
// scheduler of time-based events (deadline.approaching, project.overdue,
// budget.threshold_crossed). Every worker replica runs it; dedupe keys make
// each event fire once.
func (a *app) workJobs() []func(ctx context.Context) error {
	s := a.scheduler()
	return []func(ctx context.Context) error{s.Run}
}

func (a *app) scheduler() *core.Scheduler {
	return &core.Scheduler{
		DB:     a.db,
		Events: a.events,
		Tenants: func(ctx context.Context) ([]tenant.Tenant, error) {
			return a.registry.List(ctx, tenant.StateActive)
		},
	}
}
