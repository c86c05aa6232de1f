package api

// PluginDeps are the services of the plugins (issue 6) routes.
type PluginDeps struct{}

// pluginRoutes are the plugins (issue 6) routes.
func (s *Server) pluginRoutes() []Route { return nil }
