package api

import (
	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/rbac"
)

// PluginDeps are the services of the plugins (issue 6) routes.
type PluginDeps struct {
	// Registry stores and runs the tenants' plugins; nil serves no plugin
	// routes' data (every call answers 503).
	Registry *plugins.Registry
	// MaxModuleBytes caps the `module` part of an upload (default: the
	// host's MaxModuleBytes).
	MaxModuleBytes int64
}

// pluginRoutes are the plugins (issue 6) routes.
func (s *Server) pluginRoutes() []Route {
	const t = tenantPath
	read, manage := perm(rbac.ObjPlugins, rbac.ActRead), perm(rbac.ObjPlugins, rbac.ActManage)
	return []Route{
		{Method: "POST", Path: t + "/plugins", Handler: s.uploadPlugin, Perm: manage},
		{Method: "GET", Path: t + "/plugins", Handler: s.listPlugins, Perm: read},
		{Method: "GET", Path: t + "/plugins/:id", Handler: s.getPlugin, Perm: read},
		{Method: "PATCH", Path: t + "/plugins/:id", Handler: s.patchPlugin, Perm: manage},
		{Method: "DELETE", Path: t + "/plugins/:id", Handler: s.deletePlugin, Perm: manage},
		{Method: "POST", Path: t + "/plugins/:id/test", Handler: s.testPlugin, Perm: manage},
		{Method: "GET", Path: t + "/plugins/:id/invocations", Handler: s.listPluginInvocations, Perm: read},
		{Method: "GET", Path: t + "/plugins/:id/deliveries", Handler: s.listPluginDeliveries, Perm: read},
	}
}
