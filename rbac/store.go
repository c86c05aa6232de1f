package rbac

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Store errors.
var (
	ErrUnknownRole = errors.New("unknown role")
	ErrNotMember   = errors.New("not a member")
	ErrLastOwner   = errors.New("the last owner cannot be removed or demoted")
	ErrBuiltinRole = errors.New("built-in roles cannot be changed")
	ErrRoleInUse   = errors.New("role is assigned to members")
)

// The functions below take a transaction so that callers can write the
// membership, its policy row, the audit entry and the domain event
// atomically. Policy rows are added and removed one by one: the policy table
// is never truncated and rewritten.

type rule struct {
	Ptype string `gorm:"column:ptype"`
	V0    string `gorm:"column:v0"`
	V1    string `gorm:"column:v1"`
	V2    string `gorm:"column:v2"`
	V3    string `gorm:"column:v3"`
}

const ruleTable = "public.casbin_rule"

// SeedTenant writes the built-in roles' permissions for a new tenant and
// makes owner its first owner.
func SeedTenant(tx *gorm.DB, tenantID, owner uuid.UUID) error {
	dom := tenantID.String()
	var rows []rule
	for _, role := range BuiltinRoleNames {
		for _, p := range BuiltinPermissions(role) {
			rows = append(rows, rule{Ptype: "p", V0: role, V1: dom, V2: p.Object, V3: p.Action})
		}
	}
	if err := tx.Table(ruleTable).CreateInBatches(rows, 200).Error; err != nil {
		return fmt.Errorf("seed roles: %w", err)
	}
	_, err := SetMemberRole(tx, tenantID, System, owner, RoleOwner)
	return err
}

// RoleExists reports whether role is defined in the tenant.
func RoleExists(tx *gorm.DB, tenantID uuid.UUID, role string) (bool, error) {
	var n int64
	err := tx.Table(ruleTable).Where("ptype = 'p' AND v0 = ? AND v1 = ?", role, tenantID.String()).Limit(1).Count(&n).Error
	return n > 0, err
}

// SetMemberRole adds the user to the tenant with role, or changes the role,
// on behalf of actor (System for provisioning and the operator). It returns
// the previous role ("" if the user was not a member). Demoting the last
// owner returns ErrLastOwner; an unknown role, ErrUnknownRole.
//
// The role ceiling is checked here, under the tenant's lock, against the
// database (never a cache): the actor must hold every permission of the new
// role AND of the member's current role, so nobody can lift anyone above
// themselves nor demote (and then remove) someone whose role holds more
// than theirs. A violation returns a *CeilingError (ErrAboveCeiling).
func SetMemberRole(tx *gorm.DB, tenantID, actor, userID uuid.UUID, role string) (string, error) {
	prev, err := lockMember(tx, tenantID, userID)
	if err != nil {
		return "", err
	}
	ok, err := RoleExists(tx, tenantID, role)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", ErrUnknownRole
	}
	c, err := loadCeiling(tx, tenantID, actor)
	if err != nil {
		return "", err
	}
	if err := c.coverRole(tx, tenantID, prev, "the member's current role"); err != nil {
		return "", err
	}
	if err := c.coverRole(tx, tenantID, role, "the new role"); err != nil {
		return "", err
	}
	if prev == RoleOwner && role != RoleOwner {
		if err := ensureAnotherOwner(tx, tenantID, userID); err != nil {
			return "", err
		}
	}
	now := time.Now().UTC()
	err = tx.Table("public.memberships").Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "tenant_id"}, {Name: "user_id"}},
		DoUpdates: clause.Assignments(map[string]any{"role": role, "updated_at": now}),
	}).Create(map[string]any{"tenant_id": tenantID, "user_id": userID, "role": role, "created_at": now, "updated_at": now}).Error
	if err != nil {
		return "", fmt.Errorf("set member: %w", err)
	}
	dom, sub := tenantID.String(), userID.String()
	if err := tx.Exec("DELETE FROM "+ruleTable+" WHERE ptype = 'g' AND v0 = ? AND v2 = ?", sub, dom).Error; err != nil {
		return "", err
	}
	if err := tx.Table(ruleTable).Create(&rule{Ptype: "g", V0: sub, V1: role, V2: dom}).Error; err != nil {
		return "", err
	}
	return prev, nil
}

// RemoveMember removes the user from the tenant on behalf of actor.
// Removing the last owner returns ErrLastOwner; a non-member, ErrNotMember;
// a member whose role holds a permission the actor lacks, a *CeilingError.
func RemoveMember(tx *gorm.DB, tenantID, actor, userID uuid.UUID) (string, error) {
	prev, err := lockMember(tx, tenantID, userID)
	if err != nil {
		return "", err
	}
	if prev == "" {
		return "", ErrNotMember
	}
	c, err := loadCeiling(tx, tenantID, actor)
	if err != nil {
		return "", err
	}
	if err := c.coverRole(tx, tenantID, prev, "the member's current role"); err != nil {
		return "", err
	}
	if prev == RoleOwner {
		if err := ensureAnotherOwner(tx, tenantID, userID); err != nil {
			return "", err
		}
	}
	if err := tx.Exec("DELETE FROM public.memberships WHERE tenant_id = ? AND user_id = ?", tenantID, userID).Error; err != nil {
		return "", err
	}
	if err := tx.Exec("DELETE FROM "+ruleTable+" WHERE ptype = 'g' AND v0 = ? AND v2 = ?", userID.String(), tenantID.String()).Error; err != nil {
		return "", err
	}
	return prev, nil
}

// lockMember returns the user's current role and serialises concurrent
// membership changes of the tenant (so two owners cannot demote each other
// at once and leave none).
func lockMember(tx *gorm.DB, tenantID, userID uuid.UUID) (string, error) {
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 1))", tenantID.String()).Error; err != nil {
		return "", err
	}
	var roles []string
	if err := tx.Raw("SELECT role FROM public.memberships WHERE tenant_id = ? AND user_id = ?", tenantID, userID).Scan(&roles).Error; err != nil {
		return "", err
	}
	if len(roles) == 0 {
		return "", nil
	}
	return roles[0], nil
}

func ensureAnotherOwner(tx *gorm.DB, tenantID, userID uuid.UUID) error {
	var n int64
	if err := tx.Raw("SELECT count(*) FROM public.memberships WHERE tenant_id = ? AND role = 'owner' AND user_id <> ?", tenantID, userID).Scan(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return ErrLastOwner
	}
	return nil
}

// Member is a member of a tenant with the user's profile.
type Member struct {
	UserID uuid.UUID `json:"user_id" gorm:"column:user_id"`
	Email  string    `json:"email" gorm:"column:email"`
	Name   string    `json:"name" gorm:"column:name"`
	Role   string    `json:"role" gorm:"column:role"`
}

// ListMembers lists a tenant's members ordered by email.
func ListMembers(ctx context.Context, db *gorm.DB, tenantID uuid.UUID) ([]Member, error) {
	var ms []Member
	err := db.WithContext(ctx).Raw(`SELECT m.user_id, u.email, u.name, m.role FROM public.memberships m
		JOIN public.users u ON u.id = m.user_id WHERE m.tenant_id = ? ORDER BY u.email, m.user_id`, tenantID).Scan(&ms).Error
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return ms, nil
}

// Role is a role with its permissions.
type Role struct {
	Name        string       `json:"name"`
	Builtin     bool         `json:"builtin"`
	Permissions []Permission `json:"permissions"`
}

// ListRoles returns the tenant's roles, built-in first.
func ListRoles(ctx context.Context, db *gorm.DB, tenantID uuid.UUID) ([]Role, error) {
	var rows []rule
	if err := db.WithContext(ctx).Table(ruleTable).Where("ptype = 'p' AND v1 = ?", tenantID.String()).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	byName := map[string]*Role{}
	for _, r := range rows {
		role := byName[r.V0]
		if role == nil {
			role = &Role{Name: r.V0, Builtin: IsBuiltin(r.V0)}
			byName[r.V0] = role
		}
		role.Permissions = append(role.Permissions, Permission{r.V2, r.V3})
	}
	out := make([]Role, 0, len(byName))
	for _, name := range BuiltinRoleNames {
		if r := byName[name]; r != nil {
			out = append(out, *r)
			delete(byName, name)
		}
	}
	custom := make([]string, 0, len(byName))
	for name := range byName {
		custom = append(custom, name)
	}
	sort.Strings(custom)
	for _, name := range custom {
		out = append(out, *byName[name])
	}
	return out, nil
}
