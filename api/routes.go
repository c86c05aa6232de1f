package api

import (
	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/rbac"
)

// Route is one entry of the route table. Every route under
// /v1/tenants/:tenant/ names the permission it needs (a test walks the table
// to prove it).
type Route struct {
	Method  string
	Path    string
	Handler fiber.Handler
	// Public routes need no session.
	Public bool
	// Perm is the (object, action) a tenant route requires; nil for routes
	// outside a tenant.
	Perm *rbac.Permission
	// Fresh routes verify the session with Kratos, bypassing caches
	// (sensitive actions: member and role changes).
	Fresh bool
}

func perm(obj, act string) *rbac.Permission { return &rbac.Permission{Object: obj, Action: act} }

// routeTable is the core table plus each area's routes (one file per area:
// routes_work.go, routes_documents.go, routes_plugins.go, routes_access.go).
func (s *Server) routeTable() []Route {
	var rs []Route
	rs = append(rs, s.coreRoutes()...)
	rs = append(rs, s.workRoutes()...)
	rs = append(rs, s.documentRoutes()...)
	rs = append(rs, s.pluginRoutes()...)
	rs = append(rs, s.accessRoutes()...)
	return rs
}

// tenantPath is the prefix of every tenant-scoped route.
const tenantPath = "/v1/tenants/:tenant"

func (s *Server) coreRoutes() []Route {
	const t = tenantPath
	return []Route{
		{Method: "GET", Path: "/v1/me", Handler: s.getMe},
		{Method: "POST", Path: "/v1/tenants", Handler: s.createTenant},
		{Method: "GET", Path: "/v1/tenants", Handler: s.listTenants},

		{Method: "GET", Path: t, Handler: s.getTenant, Perm: perm(rbac.ObjTenant, rbac.ActRead)},
		{Method: "PATCH", Path: t, Handler: s.patchTenant, Perm: perm(rbac.ObjTenant, rbac.ActUpdate)},
		{Method: "DELETE", Path: t, Handler: s.deleteTenant, Perm: perm(rbac.ObjTenant, rbac.ActDelete), Fresh: true},

		{Method: "GET", Path: t + "/members", Handler: s.listMembers, Perm: perm(rbac.ObjMembers, rbac.ActRead)},
		{Method: "PUT", Path: t + "/members/:user_id", Handler: s.putMember, Perm: perm(rbac.ObjMembers, rbac.ActManage), Fresh: true},
		{Method: "DELETE", Path: t + "/members/:user_id", Handler: s.deleteMember, Perm: perm(rbac.ObjMembers, rbac.ActManage), Fresh: true},
		{Method: "GET", Path: t + "/roles", Handler: s.listRoles, Perm: perm(rbac.ObjRoles, rbac.ActRead)},

		{Method: "POST", Path: t + "/projects", Handler: s.createProject, Perm: perm(rbac.ObjProjects, rbac.ActCreate)},
		{Method: "GET", Path: t + "/projects", Handler: s.listProjects, Perm: perm(rbac.ObjProjects, rbac.ActRead)},
		{Method: "GET", Path: t + "/projects/:id", Handler: s.getProject, Perm: perm(rbac.ObjProjects, rbac.ActRead)},
		{Method: "PATCH", Path: t + "/projects/:id", Handler: s.patchProject, Perm: perm(rbac.ObjProjects, rbac.ActUpdate)},
		{Method: "DELETE", Path: t + "/projects/:id", Handler: s.deleteProject, Perm: perm(rbac.ObjProjects, rbac.ActDelete)},

		{Method: "GET", Path: t + "/audit", Handler: s.listAudit, Perm: perm(rbac.ObjAudit, rbac.ActRead)},
	}
}
