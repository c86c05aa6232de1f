package api

// WorkDeps are the services of the tasks, milestones, expenses, budget, events (issue 4) routes.
type WorkDeps struct{}

// workRoutes are the tasks, milestones, expenses, budget, events (issue 4) routes.
func (s *Server) workRoutes() []Route { return nil }
