package api

// AccessDeps are the services of the custom roles, rate limits, tokens, hooks (issue 3) routes.
type AccessDeps struct{}

// accessRoutes are the custom roles, rate limits, tokens, hooks (issue 3) routes.
func (s *Server) accessRoutes() []Route { return nil }
