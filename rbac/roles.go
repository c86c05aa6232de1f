// Package rbac decides who may do what inside a tenant: a Casbin RBAC model
// with domains (one domain per tenant), the built-in roles, custom roles,
// memberships, and per-tenant enforcers cached in memory.
//
// It must never evaluate a request against a tenant other than the one the
// request is in (the matcher requires r.dom == p.dom), never rewrite the whole
// policy table (changes are incremental rows), and never import the HTTP
// layer: routes name their permissions with the vocabulary below.
package rbac

import "slices"

// Permission is an (object, action) pair from the route table's vocabulary.
type Permission struct {
	Object string `json:"object"`
	Action string `json:"action"`
}

func (p Permission) String() string { return p.Object + ":" + p.Action }

// Objects and actions.
const (
	ObjTenant     = "tenant"
	ObjMembers    = "members"
	ObjRoles      = "roles"
	ObjProjects   = "projects"
	ObjTasks      = "tasks"
	ObjMilestones = "milestones"
	ObjExpenses   = "expenses"
	ObjBudget     = "budget"
	ObjDocuments  = "documents"
	ObjPlugins    = "plugins"
	ObjEvents     = "events"
	ObjAudit      = "audit"

	ActRead         = "read"
	ActCreate       = "create"
	ActUpdate       = "update"
	ActDelete       = "delete"
	ActManage       = "manage"
	ActManageOwners = "manage_owners"
	ActReplay       = "replay"
)

// Built-in role names, most powerful first.
const (
	RoleOwner   = "owner"
	RoleAdmin   = "admin"
	RoleManager = "manager"
	RoleMember  = "member"
	RoleViewer  = "viewer"
)

// BuiltinRoleNames lists the built-in roles, most powerful first.
var BuiltinRoleNames = []string{RoleOwner, RoleAdmin, RoleManager, RoleMember, RoleViewer}

// IsBuiltin reports whether role is a built-in role.
func IsBuiltin(role string) bool { return slices.Contains(BuiltinRoleNames, role) }

func perms(ps ...string) []Permission {
	out := make([]Permission, 0, len(ps))
	for _, p := range ps {
		for i := range len(p) {
			if p[i] == ':' {
				out = append(out, Permission{p[:i], p[i+1:]})
				break
			}
		}
	}
	return out
}

var (
	viewerPerms = perms("tenant:read", "members:read", "roles:read", "projects:read", "tasks:read",
		"milestones:read", "expenses:read", "budget:read", "documents:read", "plugins:read", "events:read")
	memberPerms = append(slices.Clone(viewerPerms), perms("tasks:create", "tasks:update",
		"documents:create", "documents:update", "expenses:create")...)
	managerPerms = append(slices.Clone(memberPerms), perms("projects:create", "projects:update",
		"projects:delete", "tasks:delete", "milestones:create", "milestones:update", "milestones:delete",
		"expenses:delete", "documents:delete")...)
	adminPerms = append(slices.Clone(managerPerms), perms("members:manage", "roles:manage",
		"plugins:manage", "tenant:update", "audit:read", "events:replay")...)
	ownerPerms = append(slices.Clone(adminPerms), perms("members:manage_owners", "tenant:delete")...)
)

// BuiltinPermissions returns the permissions of a built-in role (nil if the
// role is not built in). The sets follow API.md: viewer reads everything;
// member adds tasks, documents and expenses; manager adds projects,
// milestones, budgets and deletions; admin adds members (not owners),
// plugins, roles, settings and the audit log; owner adds owners and tenant
// deletion.
func BuiltinPermissions(role string) []Permission {
	switch role {
	case RoleOwner:
		return slices.Clone(ownerPerms)
	case RoleAdmin:
		return slices.Clone(adminPerms)
	case RoleManager:
		return slices.Clone(managerPerms)
	case RoleMember:
		return slices.Clone(memberPerms)
	case RoleViewer:
		return slices.Clone(viewerPerms)
	}
	return nil
}

// Valid reports whether p is in the vocabulary.
func (p Permission) Valid() bool { return slices.Contains(ownerPerms, p) }
