package api

import (
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/rbac"
)

// AccessDeps are the services of the custom roles, rate limits, tokens and
// hooks (issue 3) routes and middleware.
type AccessDeps struct {
	// Policies drops cached enforcers here and on every replica after a
	// role change; nil only drops them here.
	Policies *PolicyStore
	// JWT verifies bearer JWTs minted by Kratos' session tokenizer; nil
	// refuses JWTs (401).
	JWT *identity.JWTVerifier
	// HookAPIKey authenticates Kratos' web hooks (X-Hook-Key); empty
	// disables the hook routes (404).
	HookAPIKey string
	// RateLimits are the per-identity and per-tenant request limits.
	RateLimits RateLimits
	// Idempotency handles Idempotency-Key on POST routes; a nil Store
	// ignores the header.
	Idempotency Idempotency
}

// hooksPath is the prefix of machine-to-machine web hook routes: they are
// authenticated by an API key (authenticateHook), never by a session.
const hooksPath = "/v1/hooks/"

// accessRoutes are the custom roles and Kratos hook routes.
func (s *Server) accessRoutes() []Route {
	const t = tenantPath
	return []Route{
		{Method: "PUT", Path: t + "/roles/:name", Handler: s.putRole, Perm: perm(rbac.ObjRoles, rbac.ActManage), Fresh: true},
		{Method: "DELETE", Path: t + "/roles/:name", Handler: s.deleteRole, Perm: perm(rbac.ObjRoles, rbac.ActManage), Fresh: true},
		{Method: "POST", Path: hooksPath + "kratos/registration", Handler: s.kratosRegistrationHook},
	}
}
