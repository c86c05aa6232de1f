package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/rbac"
)

// maxRolePermissions caps the permissions list of a role body.
const maxRolePermissions = 100

// putRole creates or replaces a custom role:
// body {"permissions": ["projects:create", {"object": "tasks", "action": "read"}, ...]}.
// The caller must hold every permission of the role before and after the
// change, so roles:manage can never be used to climb above one's own role
// nor to strip a role held by someone above it.
func (s *Server) putRole(c *fiber.Ctx) error {
	name := c.Params("name")
	m, err := decodeObject(c, "permissions", "name", "builtin")
	if err != nil {
		return err
	}
	var errs []core.FieldError
	var bodyName string
	if field(m, "name", &bodyName, &errs) && bodyName != name {
		errs = append(errs, core.FieldError{Field: "name", Message: "must equal the role name in the path"})
	}
	var raw []json.RawMessage
	if !field(m, "permissions", &raw, &errs) && len(errs) == 0 {
		errs = append(errs, core.FieldError{Field: "permissions", Message: "is required"})
	}
	if len(raw) > maxRolePermissions {
		errs = append(errs, core.FieldError{Field: "permissions", Message: "at most 100 entries"})
	}
	var perms []rbac.Permission
	for _, r := range raw {
		p, ok := parsePermissionJSON(r)
		if !ok {
			errs = append(errs, core.FieldError{Field: "permissions", Message: `entries are "object:action" or {"object","action"}`})
			break
		}
		perms = append(perms, p)
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	perms, err = rbac.ValidateCustomRole(name, perms)
	if err != nil {
		return translateRoleErr(err)
	}
	t, ctx, who := currentTenant(c), c.UserContext(), actor(c)
	var previous []rbac.Permission
	err = t.Scope().Tx(ctx, s.d.DB, func(tx *gorm.DB) error {
		// The role ceiling (old and new permissions within the caller's)
		// is checked by PutRole under the tenant's lock.
		previous, err = rbac.PutRole(tx, t.ID, who.UserID, name, perms)
		if err != nil {
			return err
		}
		return core.RecordAudit(tx, t.Scope(), who, "role.put", "role", name, core.OutcomeSuccess,
			map[string]any{"permissions": permStrings(perms), "previous": permStrings(previous)})
	})
	if err != nil {
		return s.roleChangeErr(c, "role.put", name, err)
	}
	s.policyChanged(ctx, t.ID)
	status := fiber.StatusOK
	if previous == nil {
		status = fiber.StatusCreated
	}
	return c.Status(status).JSON(rbac.Role{Name: name, Permissions: perms})
}

// deleteRole removes a custom role that no member holds.
func (s *Server) deleteRole(c *fiber.Ctx) error {
	name := c.Params("name")
	t, ctx, who := currentTenant(c), c.UserContext(), actor(c)
	if !rbac.IsBuiltin(name) && !rbac.RoleNamePattern.MatchString(name) {
		return errf(core.ENOTFOUND, "role not found")
	}
	err := t.Scope().Tx(ctx, s.d.DB, func(tx *gorm.DB) error {
		previous, err := rbac.DeleteRole(tx, t.ID, who.UserID, name)
		if err != nil {
			return err
		}
		return core.RecordAudit(tx, t.Scope(), who, "role.delete", "role", name, core.OutcomeSuccess,
			map[string]any{"previous": permStrings(previous)})
	})
	if err != nil {
		return s.roleChangeErr(c, "role.delete", name, err)
	}
	s.policyChanged(ctx, t.ID)
	return c.SendStatus(fiber.StatusNoContent)
}

// roleChangeErr translates the error of a role change; one refused by the
// role ceiling (the role, before or after, holds a permission the caller
// lacks) is audited as denied after its transaction rolled back and
// answers 403.
func (s *Server) roleChangeErr(c *fiber.Ctx, action, role string, err error) error {
	var ce *rbac.CeilingError
	if !errors.As(err, &ce) {
		return translateRoleErr(err)
	}
	t, ctx, who := currentTenant(c), c.UserContext(), actor(c)
	if aerr := s.d.Audit.Record(ctx, t.Scope(), who, action, "role", role, core.OutcomeDenied,
		map[string]any{"reason": ce.Error(), "permission": ce.Permission.String()}); aerr != nil {
		return aerr
	}
	return errf(core.EFORBIDDEN, "you cannot change the role "+role+": "+ce.Subject+" include "+ce.Permission.String()+
		", which your role ("+currentRole(c)+") does not hold")
}

func (s *Server) policyChanged(ctx context.Context, tenantID uuid.UUID) {
	if p := s.d.Access.Policies; p != nil {
		p.Changed(ctx, tenantID)
		return
	}
	s.d.Enforcers.Invalidate(tenantID)
}

func parsePermissionJSON(r json.RawMessage) (rbac.Permission, bool) {
	var str string
	if json.Unmarshal(r, &str) == nil {
		return rbac.ParsePermission(str)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(r, &obj) != nil || len(obj) != 2 {
		return rbac.Permission{}, false
	}
	var p rbac.Permission
	if json.Unmarshal(obj["object"], &p.Object) != nil || json.Unmarshal(obj["action"], &p.Action) != nil || p.Object == "" || p.Action == "" {
		return rbac.Permission{}, false
	}
	return p, true
}

func permStrings(ps []rbac.Permission) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func translateRoleErr(err error) error {
	switch {
	case errors.Is(err, rbac.ErrBuiltinRole):
		return &core.Error{Code: core.ECONFLICT, Message: "built-in roles cannot be changed or deleted"}
	case errors.Is(err, rbac.ErrRoleInUse):
		return &core.Error{Code: core.ECONFLICT, Message: "the role is assigned to members: give them another role first"}
	case errors.Is(err, rbac.ErrRoleNotFound):
		return &core.Error{Code: core.ENOTFOUND, Message: "role not found"}
	case errors.Is(err, rbac.ErrTooManyRoles):
		return &core.Error{Code: core.ECONFLICT, Message: "a tenant has at most 50 custom roles"}
	case errors.Is(err, rbac.ErrInvalidRoleName):
		return core.Invalid(core.FieldError{Field: "name", Message: "must match ^[a-z][a-z0-9_-]{1,39}$ (lowercase, 2-40 characters) and not be a user id"})
	case errors.Is(err, rbac.ErrOwnerOnlyPerm):
		return core.Invalid(core.FieldError{Field: "permissions", Message: err.Error() + " (owner-only powers stay with the owner role)"})
	case errors.Is(err, rbac.ErrInvalidPerm), errors.Is(err, rbac.ErrEmptyRole), errors.Is(err, rbac.ErrTooManyPermsRole):
		return core.Invalid(core.FieldError{Field: "permissions", Message: err.Error() + "; see GET .../roles for the vocabulary"})
	}
	return err
}

// authenticateHook checks a web hook's API key (X-Hook-Key) in constant
// time. Without a configured key the hook routes do not exist (404).
func (s *Server) authenticateHook(c *fiber.Ctx) error {
	want := s.d.Access.HookAPIKey
	if want == "" {
		return errf(core.ENOTFOUND, "not found")
	}
	got := sha256.Sum256([]byte(c.Get("X-Hook-Key")))
	exp := sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], exp[:]) != 1 {
		return errf(core.EUNAUTHORIZED, "a valid X-Hook-Key is required")
	}
	return nil
}

// kratosRegistrationHook records a newly registered identity (body of
// deploy/kratos/registration-hook.jsonnet). Deliveries are idempotent and
// order-independent: a row changes only for a newer identity updated_at.
func (s *Server) kratosRegistrationHook(c *fiber.Ctx) error {
	m, err := decodeObject(c, "identity_id", "traits", "updated_at")
	if err != nil {
		return err
	}
	var id uuid.UUID
	var updated time.Time
	var traits map[string]any
	var errs []core.FieldError
	if !field(m, "identity_id", &id, &errs) || id == uuid.Nil {
		errs = append(errs, core.FieldError{Field: "identity_id", Message: "must be the identity's id"})
	}
	if !field(m, "updated_at", &updated, &errs) || updated.IsZero() {
		errs = append(errs, core.FieldError{Field: "updated_at", Message: "must be an RFC 3339 timestamp"})
	}
	field(m, "traits", &traits, &errs)
	email, name := identity.UserFromTraits(traits)
	if len(email) > 320 || len(name) > 200 {
		errs = append(errs, core.FieldError{Field: "traits", Message: "email or name too long"})
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	applied, err := identity.UpsertUserIfNewer(c.UserContext(), s.d.DB, identity.UserRecord{ID: id, Email: email, Name: name, IdentityUpdatedAt: updated})
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"user_id": id, "applied": applied})
}
