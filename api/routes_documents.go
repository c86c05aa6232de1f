package api

// DocumentDeps are the services of the documents (issue 5) routes.
type DocumentDeps struct{}

// documentRoutes are the documents (issue 5) routes.
func (s *Server) documentRoutes() []Route { return nil }
