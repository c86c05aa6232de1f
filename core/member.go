package core

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// PolicyStore keeps memberships and role grants. Its methods run in the
// caller's transaction and return *Error values for rule violations (unknown
// role: EINVALID, last owner: ECONFLICT, not a member: ENOTFOUND, a change
// above the actor's own permissions: EFORBIDDEN). actor is the user on
// whose behalf the change is made (uuid.Nil: the platform itself, which no
// role ceiling limits). Changed is called after commit so that cached
// decisions are dropped on every replica.
type PolicyStore interface {
	Seed(tx *gorm.DB, tenantID, owner uuid.UUID) error
	SetMemberRole(tx *gorm.DB, tenantID, actor, userID uuid.UUID, role string) (previous string, err error)
	RemoveMember(tx *gorm.DB, tenantID, actor, userID uuid.UUID) (previous string, err error)
	Changed(ctx context.Context, tenantID uuid.UUID)
}

// TenantService creates and manages tenants.
type TenantService struct {
	DB       *gorm.DB
	Registry *tenant.Registry
	Policies PolicyStore
	Events   EventSink
	// DeleteGrace is how long a deleted tenant is kept before the purge.
	DeleteGrace time.Duration
	// MaxOwnedPerUser bounds the tenants (in any state until purged) one
	// user may own when creating another; 0 = no bound (the operator's CLI).
	MaxOwnedPerUser int
}

// Create provisions a tenant whose owner is the actor. It returns EINVALID
// for a bad or reserved slug or a bad name, ECONFLICT if the slug is taken
// (by a live or a soft-deleted tenant: the message does not say which) and
// EFORBIDDEN if the actor already owns MaxOwnedPerUser tenants.
func (s *TenantService) Create(ctx context.Context, actor Actor, slug, name string) (*tenant.Tenant, error) {
	var v Validator
	v.Check(tenant.SlugPattern.MatchString(slug), "slug", "must match ^[a-z][a-z0-9-]{2,39}$")
	name = strings.TrimSpace(name)
	v.Check(name != "" && utf8.RuneCountInString(name) <= 200, "name", "must be 1-200 characters")
	if err := v.Err(); err != nil {
		return nil, err
	}
	t, err := s.Registry.Provision(ctx, tenant.ProvisionParams{Slug: slug, Name: name, Owner: actor.UserID, MaxOwned: s.MaxOwnedPerUser, Seed: func(tx *gorm.DB, t *tenant.Tenant) error {
		if err := s.Policies.Seed(tx, t.ID, actor.UserID); err != nil {
			return err
		}
		sc := t.Scope()
		if err := RecordAudit(tx, sc, actor, "tenant.create", "tenant", t.ID.String(), OutcomeSuccess, map[string]any{"slug": slug}); err != nil {
			return err
		}
		_, err := s.Events.Emit(tx, t.ID, actor.UserID, EventMemberAdded, actor.UserID.String(), "",
			map[string]any{"user_id": actor.UserID, "role": "owner"})
		return err
	}})
	switch {
	case errors.Is(err, tenant.ErrSlugTaken):
		return nil, &Error{Code: ECONFLICT, Message: fmt.Sprintf("the slug %q is taken", slug)}
	case errors.Is(err, tenant.ErrInvalidSlug):
		return nil, Invalid(FieldError{Field: "slug", Message: "must match ^[a-z][a-z0-9-]{2,39}$"})
	case errors.Is(err, tenant.ErrReservedSlug):
		return nil, Invalid(FieldError{Field: "slug", Message: fmt.Sprintf("%q is reserved for the platform; choose another", slug)})
	case errors.Is(err, tenant.ErrTooManyTenants):
		return nil, &Error{Code: EFORBIDDEN, Message: fmt.Sprintf("you already own %d tenants, the most one user may own; delete one (it counts until it is purged) or ask an operator", s.MaxOwnedPerUser)}
	case err != nil:
		return nil, err
	}
	return t, nil
}

// Rename changes a tenant's display name.
func (s *TenantService) Rename(ctx context.Context, t *tenant.Tenant, actor Actor, name string) error {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > 200 {
		return Invalid(FieldError{Field: "name", Message: "must be 1-200 characters"})
	}
	if err := s.Registry.Rename(ctx, t.ID, name); err != nil {
		return translateTenantErr(err)
	}
	return RecordAudit(s.DB.WithContext(ctx), t.Scope(), actor, "tenant.rename", "tenant", t.ID.String(), OutcomeSuccess, map[string]any{"name": name})
}

// Delete soft-deletes a tenant; the worker purges it after the grace period.
func (s *TenantService) Delete(ctx context.Context, t *tenant.Tenant, actor Actor) error {
	if err := RecordAudit(s.DB.WithContext(ctx), t.Scope(), actor, "tenant.delete", "tenant", t.ID.String(), OutcomeSuccess, nil); err != nil {
		return err
	}
	grace := s.DeleteGrace
	if grace <= 0 {
		grace = 30 * 24 * time.Hour
	}
	if err := s.Registry.SoftDelete(ctx, t.ID, grace); err != nil {
		return translateTenantErr(err)
	}
	s.Policies.Changed(ctx, t.ID)
	return nil
}

func translateTenantErr(err error) error {
	if errors.Is(err, tenant.ErrNotFound) {
		return &Error{Code: ENOTFOUND, Message: "tenant not found"}
	}
	return err
}

// MemberService changes who belongs to a tenant.
type MemberService struct {
	DB       *gorm.DB
	Policies PolicyStore
	Events   EventSink
}

// SetRole adds a user to the tenant or changes their role. The user must
// have signed in at least once (ENOTFOUND otherwise). It returns EFORBIDDEN
// (and audits the denied attempt) when the new role or the member's current
// role holds a permission the actor does not.
func (s *MemberService) SetRole(ctx context.Context, sc tenant.Scope, actor Actor, userID uuid.UUID, role string) (previous string, err error) {
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		var n int64
		if err := tx.Table("public.users").Where("id = ?", userID).Count(&n).Error; err != nil {
			return err
		}
		if n == 0 {
			return &Error{Code: ENOTFOUND, Message: "user not found: they must sign in once before they can be added"}
		}
		previous, err = s.Policies.SetMemberRole(tx, sc.ID, actor.UserID, userID, role)
		if err != nil {
			return err
		}
		if err := RecordAudit(tx, sc, actor, "member.set_role", "member", userID.String(), OutcomeSuccess,
			map[string]any{"role": role, "previous": previous}); err != nil {
			return err
		}
		if previous == "" {
			return s.Events.emit(tx, sc, actor, EventMemberAdded, userID.String(), map[string]any{"user_id": userID, "role": role})
		}
		return nil
	})
	if err != nil {
		return "", s.auditDenied(ctx, sc, actor, "member.set_role", userID, map[string]any{"role": role}, err)
	}
	s.Policies.Changed(ctx, sc.ID)
	return previous, nil
}

// Remove removes a member. It returns ENOTFOUND for a non-member,
// ECONFLICT for the last owner and EFORBIDDEN (audited) when the member's
// role holds a permission the actor does not.
func (s *MemberService) Remove(ctx context.Context, sc tenant.Scope, actor Actor, userID uuid.UUID) error {
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		prev, err := s.Policies.RemoveMember(tx, sc.ID, actor.UserID, userID)
		if err != nil {
			return err
		}
		if err := RecordAudit(tx, sc, actor, "member.remove", "member", userID.String(), OutcomeSuccess, map[string]any{"previous": prev}); err != nil {
			return err
		}
		return s.Events.emit(tx, sc, actor, EventMemberRemoved, userID.String(), map[string]any{"user_id": userID})
	})
	if err != nil {
		return s.auditDenied(ctx, sc, actor, "member.remove", userID, nil, err)
	}
	s.Policies.Changed(ctx, sc.ID)
	return nil
}

// auditDenied records a change refused with EFORBIDDEN (after its
// transaction rolled back) and returns err.
func (s *MemberService) auditDenied(ctx context.Context, sc tenant.Scope, actor Actor, action string, userID uuid.UUID, details map[string]any, err error) error {
	var e *Error
	if !errors.As(err, &e) || e.Code != EFORBIDDEN {
		return err
	}
	if details == nil {
		details = map[string]any{}
	}
	details["reason"] = e.Message
	if aerr := RecordAudit(s.DB.WithContext(ctx), sc, actor, action, "member", userID.String(), OutcomeDenied, details); aerr != nil {
		return fmt.Errorf("audit denied %s: %w", action, aerr)
	}
	return err
}
