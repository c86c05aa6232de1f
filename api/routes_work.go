package api

import (
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/rbac"
)

// WorkDeps are the services of the tasks, milestones, expenses, budget and
// events routes.
type WorkDeps struct {
	Tasks      *core.TaskService
	Milestones *core.MilestoneService
	Expenses   *core.ExpenseService
	Budget     *core.BudgetService
	Events     *core.EventService
}

// workRoutes are the tasks, milestones, expenses, budget and events routes.
// Every nested route answers 404 for a project that is deleted or belongs to
// another tenant.
func (s *Server) workRoutes() []Route {
	const p = tenantPath + "/projects/:id"
	return []Route{
		{Method: "POST", Path: p + "/tasks", Handler: s.createTask, Perm: perm(rbac.ObjTasks, rbac.ActCreate)},
		{Method: "GET", Path: p + "/tasks", Handler: s.listTasks, Perm: perm(rbac.ObjTasks, rbac.ActRead)},
		{Method: "GET", Path: p + "/tasks/:task_id", Handler: s.getTask, Perm: perm(rbac.ObjTasks, rbac.ActRead)},
		{Method: "PATCH", Path: p + "/tasks/:task_id", Handler: s.patchTask, Perm: perm(rbac.ObjTasks, rbac.ActUpdate)},
		{Method: "DELETE", Path: p + "/tasks/:task_id", Handler: s.deleteTask, Perm: perm(rbac.ObjTasks, rbac.ActDelete)},

		{Method: "POST", Path: p + "/milestones", Handler: s.createMilestone, Perm: perm(rbac.ObjMilestones, rbac.ActCreate)},
		{Method: "GET", Path: p + "/milestones", Handler: s.listMilestones, Perm: perm(rbac.ObjMilestones, rbac.ActRead)},
		{Method: "GET", Path: p + "/milestones/:milestone_id", Handler: s.getMilestone, Perm: perm(rbac.ObjMilestones, rbac.ActRead)},
		{Method: "PATCH", Path: p + "/milestones/:milestone_id", Handler: s.patchMilestone, Perm: perm(rbac.ObjMilestones, rbac.ActUpdate)},
		{Method: "DELETE", Path: p + "/milestones/:milestone_id", Handler: s.deleteMilestone, Perm: perm(rbac.ObjMilestones, rbac.ActDelete)},

		{Method: "POST", Path: p + "/expenses", Handler: s.createExpense, Perm: perm(rbac.ObjExpenses, rbac.ActCreate)},
		{Method: "GET", Path: p + "/expenses", Handler: s.listExpenses, Perm: perm(rbac.ObjExpenses, rbac.ActRead)},
		{Method: "DELETE", Path: p + "/expenses/:expense_id", Handler: s.deleteExpense, Perm: perm(rbac.ObjExpenses, rbac.ActDelete)},
		{Method: "GET", Path: p + "/budget", Handler: s.getBudget, Perm: perm(rbac.ObjBudget, rbac.ActRead)},

		{Method: "GET", Path: tenantPath + "/events", Handler: s.listEvents, Perm: perm(rbac.ObjEvents, rbac.ActRead)},
		{Method: "POST", Path: tenantPath + "/events/:event_id/replay", Handler: s.replayEvent, Perm: perm(rbac.ObjEvents, rbac.ActReplay)},
	}
}
