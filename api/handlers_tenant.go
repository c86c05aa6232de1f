package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/rbac"
	"github.com/promanage/promanage/tenant"
)

type tenantView struct {
	ID            uuid.UUID `json:"id"`
	Slug          string    `json:"slug"`
	Name          string    `json:"name"`
	State         string    `json:"state"`
	SchemaVersion int       `json:"schema_version"`
	Role          string    `json:"role,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Storage is the tenant's document storage use (GET of one tenant only).
	Storage *storageView `json:"storage,omitempty"`
	// Settings the tenant's admins control (see PATCH).
	Settings tenantSettingsView `json:"settings"`
}

type tenantSettingsView struct {
	// DeadlineWarningDays is 0 when the platform default applies.
	DeadlineWarningDays int `json:"deadline_warning_days,omitempty"`
}

func viewTenant(t *tenant.Tenant, role string) tenantView {
	return tenantView{ID: t.ID, Slug: t.Slug, Name: t.Name, State: t.State, SchemaVersion: t.SchemaVersion,
		Role: role, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC(),
		Settings: tenantSettingsView{DeadlineWarningDays: tenant.DeadlineWarningDays(t)}}
}

func (s *Server) getMe(c *fiber.Ctx) error {
	p := principal(c)
	ms, err := s.d.Registry.ListForUser(c.UserContext(), p.ID)
	if err != nil {
		return err
	}
	type membership struct {
		Tenant string `json:"tenant"`
		Role   string `json:"role"`
	}
	out := make([]membership, len(ms))
	for i, m := range ms {
		out[i] = membership{Tenant: m.Slug, Role: m.Role}
	}
	return c.JSON(fiber.Map{
		"user":        fiber.Map{"id": p.ID, "email": p.Email, "name": p.Name},
		"memberships": out,
	})
}

// createTenant provisions a tenant owned by the caller. Creation is rate
// limited per identity and per client address, and the number of tenants
// one user owns is bounded (TenantService.MaxOwnedPerUser). A taken slug
// is 409 whether its tenant is live or soft-deleted (the answer never says
// which, nor anything else about it).
func (s *Server) createTenant(c *fiber.Ctx) error {
	if err := s.limitTenantCreation(c); err != nil {
		return err
	}
	m, err := decodeObject(c, "slug", "name")
	if err != nil {
		return err
	}
	var slug, name string
	var errs []core.FieldError
	field(m, "slug", &slug, &errs)
	field(m, "name", &name, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	if name == "" {
		name = slug
	}
	t, err := s.d.Tenants.Create(c.UserContext(), actor(c), slug, name)
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + t.Slug)
	return c.Status(fiber.StatusCreated).JSON(viewTenant(t, rbac.RoleOwner))
}

func (s *Server) listTenants(c *fiber.Ctx) error {
	ms, err := s.d.Registry.ListForUser(c.UserContext(), principal(c).ID)
	if err != nil {
		return err
	}
	items := make([]tenantView, len(ms))
	for i := range ms {
		items[i] = viewTenant(&ms[i].Tenant, ms[i].Role)
	}
	return c.JSON(core.Page[tenantView]{Items: items})
}

func (s *Server) getTenant(c *fiber.Ctx) error {
	v := viewTenant(currentTenant(c), currentRole(c))
	st, err := s.tenantStorage(c.UserContext(), currentTenant(c))
	if err != nil {
		return err
	}
	v.Storage = st
	return c.JSON(v)
}

// patchTenant renames the tenant and changes its own settings (admin+):
// the content-type allowlist of documents and the deadline warning days.
// Quotas and file-size limits are the operator's (promanage tenant settings).
func (s *Server) patchTenant(c *fiber.Ctx) error {
	m, err := decodeObject(c, "name", "settings")
	if err != nil {
		return err
	}
	var name string
	var settings struct {
		AllowedContentTypes *[]string `json:"allowed_content_types"`
		DeadlineWarningDays *int      `json:"deadline_warning_days"`
	}
	var errs []core.FieldError
	renamed := field(m, "name", &name, &errs)
	if raw, ok := m["settings"]; ok {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&settings); err != nil {
			errs = append(errs, core.FieldError{Field: "settings", Message: "an object with allowed_content_types and/or deadline_warning_days (quotas are set by the operator)"})
		}
	}
	// Every setting is checked before anything is written: a bad one must
	// not leave the tenant renamed.
	if d := settings.DeadlineWarningDays; d != nil && (*d < 1 || *d > 365) {
		errs = append(errs, core.FieldError{Field: "settings.deadline_warning_days", Message: "deadline_warning_days must be from 1 to 365"})
	}
	if ts := settings.AllowedContentTypes; ts != nil {
		if err := (tenant.StorageSettings{AllowedContentTypes: *ts}).Validate(); err != nil {
			errs = append(errs, core.FieldError{Field: "settings.allowed_content_types", Message: err.Error()})
		}
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	t, ctx, who := currentTenant(c), c.UserContext(), actor(c)
	if renamed {
		if err := s.d.Tenants.Rename(ctx, t, who, name); err != nil {
			return err
		}
	}
	if settings.AllowedContentTypes != nil {
		// Under the row's lock: the operator's quota, changed meanwhile, is kept.
		if _, err := s.d.Registry.UpdateStorageSettings(ctx, t.ID, func(st *tenant.StorageSettings) {
			st.AllowedContentTypes = *settings.AllowedContentTypes
		}); err != nil {
			if errors.Is(err, tenant.ErrNotFound) {
				return errf(core.ENOTFOUND, "tenant not found")
			}
			return core.Invalid(core.FieldError{Field: "settings.allowed_content_types", Message: err.Error()})
		}
	}
	if settings.DeadlineWarningDays != nil {
		if err := s.d.Registry.SetDeadlineWarningDays(ctx, t.ID, *settings.DeadlineWarningDays); err != nil {
			if errors.Is(err, tenant.ErrNotFound) {
				return errf(core.ENOTFOUND, "tenant not found")
			}
			return core.Invalid(core.FieldError{Field: "settings.deadline_warning_days", Message: err.Error()})
		}
	}
	if settings.AllowedContentTypes != nil || settings.DeadlineWarningDays != nil {
		if err := s.d.Audit.Record(ctx, t.Scope(), who, "tenant.settings", "tenant", t.ID.String(), core.OutcomeSuccess, settings); err != nil {
			return err
		}
	}
	if renamed || settings.AllowedContentTypes != nil || settings.DeadlineWarningDays != nil {
		s.policyChanged(ctx, t.ID) // other replicas drop their cached tenant row
	}
	t2, err := s.d.Registry.ByID(ctx, t.ID)
	if err != nil {
		return err
	}
	v := viewTenant(t2, currentRole(c))
	if v.Storage, err = s.tenantStorage(ctx, t2); err != nil {
		return err
	}
	return c.JSON(v)
}

func (s *Server) deleteTenant(c *fiber.Ctx) error {
	if err := s.d.Tenants.Delete(c.UserContext(), currentTenant(c), actor(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listMembers(c *fiber.Ctx) error {
	ms, err := rbac.ListMembers(c.UserContext(), s.d.DB, currentTenant(c).ID)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []rbac.Member{}
	}
	return c.JSON(core.Page[rbac.Member]{Items: ms})
}

// requireOwnerPower: only a role holding members:manage_owners may grant the
// owner role or change or remove an owner.
func (s *Server) requireOwnerPower(c *fiber.Ctx, target uuid.UUID, newRole string) error {
	t := currentTenant(c)
	ctx := c.UserContext()
	targetRole, err := s.d.Enforcers.RoleOf(ctx, t.ID, target)
	if err != nil {
		return err
	}
	if newRole != rbac.RoleOwner && targetRole != rbac.RoleOwner {
		return nil
	}
	ok, err := s.d.Enforcers.Allow(ctx, t.ID, principal(c).ID, rbac.ObjMembers, rbac.ActManageOwners)
	if err != nil {
		return err
	}
	if !ok {
		if err := s.d.Audit.Record(ctx, t.Scope(), actor(c), "members:manage_owners", "member", target.String(), core.OutcomeDenied, map[string]any{"role": newRole}); err != nil {
			return err
		}
		return errf(core.EFORBIDDEN, "only an owner can grant, change or remove the owner role")
	}
	return nil
}

func (s *Server) putMember(c *fiber.Ctx) error {
	userID, err := pathUUID(c, "user_id", "user")
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "role")
	if err != nil {
		return err
	}
	var role string
	var errs []core.FieldError
	field(m, "role", &role, &errs)
	if err := fieldsErr(errs); err != nil {
		return err
	}
	if role == "" {
		return core.Invalid(core.FieldError{Field: "role", Message: "is required"})
	}
	if err := s.requireOwnerPower(c, userID, role); err != nil {
		return err
	}
	// The role ceiling (the new role and the member's current role within
	// the caller's permissions) is checked by SetRole under the tenant's
	// lock; a refusal is 403 and audited.
	prev, err := s.d.Members.SetRole(c.UserContext(), currentTenant(c).Scope(), actor(c), userID, role)
	if err != nil {
		return err
	}
	status := fiber.StatusOK
	if prev == "" {
		status = fiber.StatusCreated
	}
	ms, err := rbac.ListMembers(c.UserContext(), s.d.DB, currentTenant(c).ID)
	if err != nil {
		return err
	}
	for _, mem := range ms {
		if mem.UserID == userID {
			return c.Status(status).JSON(mem)
		}
	}
	return c.Status(status).JSON(fiber.Map{"user_id": userID, "role": role})
}

func (s *Server) deleteMember(c *fiber.Ctx) error {
	userID, err := pathUUID(c, "user_id", "member")
	if err != nil {
		return err
	}
	if err := s.requireOwnerPower(c, userID, ""); err != nil {
		return err
	}
	// Nobody removes someone whose role holds more than theirs: checked by
	// Remove under the tenant's lock (403, audited).
	if err := s.d.Members.Remove(c.UserContext(), currentTenant(c).Scope(), actor(c), userID); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listRoles(c *fiber.Ctx) error {
	roles, err := rbac.ListRoles(c.UserContext(), s.d.DB, currentTenant(c).ID)
	if err != nil {
		return err
	}
	return c.JSON(core.Page[rbac.Role]{Items: roles})
}

func (s *Server) listAudit(c *fiber.Ctx) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	f := core.AuditFilter{Limit: limit, Cursor: c.Query("cursor"), Action: c.Query("action"),
		ObjectType: c.Query("object_type"), ObjectID: c.Query("object_id"), Outcome: c.Query("outcome")}
	if a := c.Query("actor"); a != "" {
		id, err := uuid.Parse(a)
		if err != nil {
			return core.Invalid(core.FieldError{Field: "actor", Message: "must be a user id"})
		}
		f.ActorID = &id
	}
	for name, dst := range map[string]**time.Time{"since": &f.Since, "until": &f.Until} {
		if v := c.Query(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return core.Invalid(core.FieldError{Field: name, Message: "must be an RFC 3339 timestamp"})
			}
			*dst = &t
		}
	}
	page, err := s.d.Audit.List(c.UserContext(), currentTenant(c).Scope(), f)
	if err != nil {
		return err
	}
	return c.JSON(page)
}

// PolicyStore adapts package rbac to core.PolicyStore: it translates rbac's
// errors to domain errors and, after a change, drops the tenant's cached
// enforcer here and (through notify) on every other replica.
type PolicyStore struct {
	Enforcers *rbac.Enforcers
	// Notify publishes the change to other replicas; may be nil.
	Notify func(ctx context.Context, tenantID uuid.UUID)
}

func (p *PolicyStore) Seed(tx *gorm.DB, tenantID, owner uuid.UUID) error {
	return rbac.SeedTenant(tx, tenantID, owner)
}

func (p *PolicyStore) SetMemberRole(tx *gorm.DB, tenantID, actor, userID uuid.UUID, role string) (string, error) {
	prev, err := rbac.SetMemberRole(tx, tenantID, actor, userID, role)
	return prev, translatePolicyErr(err)
}

func (p *PolicyStore) RemoveMember(tx *gorm.DB, tenantID, actor, userID uuid.UUID) (string, error) {
	prev, err := rbac.RemoveMember(tx, tenantID, actor, userID)
	return prev, translatePolicyErr(err)
}

func (p *PolicyStore) Changed(ctx context.Context, tenantID uuid.UUID) {
	p.Enforcers.Invalidate(tenantID)
	if p.Notify != nil {
		p.Notify(ctx, tenantID)
	}
}

func translatePolicyErr(err error) error {
	var ce *rbac.CeilingError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return &core.Error{Code: core.EFORBIDDEN, Message: "you cannot make this change: " + ce.Subject + " (" + ce.Role + ") holds " +
			ce.Permission.String() + ", which your role does not", Err: err}
	case errors.Is(err, rbac.ErrUnknownRole):
		return core.Invalid(core.FieldError{Field: "role", Message: "unknown role; see GET .../roles (built-in: " + strings.Join(rbac.BuiltinRoleNames, ", ") + ")"})
	case errors.Is(err, rbac.ErrLastOwner):
		return &core.Error{Code: core.ECONFLICT, Message: "the last owner cannot be removed or demoted"}
	case errors.Is(err, rbac.ErrNotMember):
		return &core.Error{Code: core.ENOTFOUND, Message: "member not found"}
	case errors.Is(err, rbac.ErrRoleInUse):
		return &core.Error{Code: core.ECONFLICT, Message: "the role is assigned to members"}
	case errors.Is(err, rbac.ErrBuiltinRole):
		return &core.Error{Code: core.ECONFLICT, Message: "built-in roles cannot be changed"}
	}
	return err
}
