package rbac

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Custom role errors.
var (
	ErrInvalidRoleName  = errors.New("role name must match ^[a-z][a-z0-9_-]{1,39}$")
	ErrInvalidPerm      = errors.New("permission is not in the vocabulary")
	ErrOwnerOnlyPerm    = errors.New("permission is reserved to the owner role")
	ErrEmptyRole        = errors.New("a role needs at least one permission")
	ErrRoleNotFound     = errors.New("role not found")
	ErrTooManyRoles     = errors.New("too many custom roles")
	ErrTooManyPermsRole = errors.New("too many permissions")
)

// RoleNamePattern is the shape of a custom role name: lowercase, 2-40
// characters, starting with a letter. A name must also not be a user id
// (see validRoleName).
var RoleNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{1,39}$`)

// validRoleName reports whether name can be a custom role. Casbin keeps users
// and roles in one namespace (g = user, role, tenant; p = role, tenant, ...):
// a role named like a user id ("e3b0c442-...") would hand that user the
// role's permissions, and members given the role would inherit that user's
// role (an admin could become owner). So names that parse as a UUID are
// refused.
func validRoleName(name string) bool {
	if !RoleNamePattern.MatchString(name) {
		return false
	}
	_, err := uuid.Parse(name)
	return err != nil
}

// MaxCustomRoles bounds the custom roles of one tenant (each role is a set of
// rows in every decision's enforcer).
const MaxCustomRoles = 50

// OwnerOnly are the permissions no custom role may hold: they stay with the
// owner role so that an owner can never be locked out by a role an admin
// defined.
var OwnerOnly = []Permission{{ObjMembers, ActManageOwners}, {ObjTenant, ActDelete}}

// ParsePermission reads "object:action".
func ParsePermission(s string) (Permission, bool) {
	obj, act, ok := strings.Cut(s, ":")
	if !ok || obj == "" || act == "" {
		return Permission{}, false
	}
	return Permission{Object: obj, Action: act}, true
}

// ValidateCustomRole checks a custom role's name and permissions and returns
// the permissions deduplicated and in vocabulary order. It returns
// ErrInvalidRoleName, ErrBuiltinRole, ErrEmptyRole, ErrInvalidPerm or
// ErrOwnerOnlyPerm (wrapped with the offending permission).
func ValidateCustomRole(name string, ps []Permission) ([]Permission, error) {
	if IsBuiltin(name) {
		return nil, ErrBuiltinRole
	}
	if !validRoleName(name) {
		return nil, ErrInvalidRoleName
	}
	if len(ps) == 0 {
		return nil, ErrEmptyRole
	}
	if len(ps) > len(ownerPerms)*2 {
		return nil, ErrTooManyPermsRole
	}
	want := map[Permission]bool{}
	for _, p := range ps {
		if !p.Valid() {
			return nil, fmt.Errorf("%w: %s", ErrInvalidPerm, p)
		}
		if slices.Contains(OwnerOnly, p) {
			return nil, fmt.Errorf("%w: %s", ErrOwnerOnlyPerm, p)
		}
		want[p] = true
	}
	out := make([]Permission, 0, len(want))
	for _, p := range ownerPerms { // vocabulary order
		if want[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// RolePermissions returns a role's permissions in the tenant (nil if the
// role does not exist).
func RolePermissions(tx *gorm.DB, tenantID uuid.UUID, role string) ([]Permission, error) {
	var rows []rule
	if err := tx.Table(ruleTable).Where("ptype = 'p' AND v0 = ? AND v1 = ?", role, tenantID.String()).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("role permissions: %w", err)
	}
	var out []Permission
	for _, r := range rows {
		out = append(out, Permission{r.V2, r.V3})
	}
	return out, nil
}

// PutRole creates or replaces a custom role with exactly the given
// permissions (validated with ValidateCustomRole first) on behalf of actor.
// Only the rows that differ are inserted or deleted: the policy table is
// never rewritten. It returns the previous permissions (nil if the role is
// new) and ErrBuiltinRole, ErrInvalidRoleName or ErrTooManyRoles.
//
// The actor must hold every permission of the role before and after the
// change (a *CeilingError otherwise). A member holds exactly their role's
// permissions, so this is the ceiling over every current holder: nobody
// can shrink or reshape a role held by someone above them, nor grow a role
// (their own included) past what they hold.
func PutRole(tx *gorm.DB, tenantID, actor uuid.UUID, name string, ps []Permission) (previous []Permission, err error) {
	if IsBuiltin(name) {
		return nil, ErrBuiltinRole
	}
	if !validRoleName(name) {
		return nil, ErrInvalidRoleName
	}
	dom := tenantID.String()
	if err := lockRoles(tx, tenantID); err != nil {
		return nil, err
	}
	previous, err = RolePermissions(tx, tenantID, name)
	if err != nil {
		return nil, err
	}
	c, err := loadCeiling(tx, tenantID, actor)
	if err != nil {
		return nil, err
	}
	if err := c.cover(previous, name, "the role's current permissions"); err != nil {
		return nil, err
	}
	if err := c.cover(ps, name, "the role's new permissions"); err != nil {
		return nil, err
	}
	if previous == nil {
		var n int64
		if err := tx.Raw("SELECT count(DISTINCT v0) FROM "+ruleTable+" WHERE ptype = 'p' AND v1 = ? AND v0 NOT IN ?", dom, BuiltinRoleNames).Scan(&n).Error; err != nil {
			return nil, fmt.Errorf("count roles: %w", err)
		}
		if n >= MaxCustomRoles {
			return nil, ErrTooManyRoles
		}
	}
	for _, p := range previous {
		if !slices.Contains(ps, p) {
			if err := tx.Exec("DELETE FROM "+ruleTable+" WHERE ptype = 'p' AND v0 = ? AND v1 = ? AND v2 = ? AND v3 = ?", name, dom, p.Object, p.Action).Error; err != nil {
				return nil, fmt.Errorf("remove permission: %w", err)
			}
		}
	}
	var add []rule
	for _, p := range ps {
		if !slices.Contains(previous, p) {
			add = append(add, rule{Ptype: "p", V0: name, V1: dom, V2: p.Object, V3: p.Action})
		}
	}
	if len(add) > 0 {
		if err := tx.Table(ruleTable).Create(&add).Error; err != nil {
			return nil, fmt.Errorf("add permissions: %w", err)
		}
	}
	return previous, nil
}

// DeleteRole removes a custom role on behalf of actor. It returns
// ErrBuiltinRole for a built-in role, ErrRoleNotFound if the tenant has no
// such role, ErrRoleInUse while a member holds it and a *CeilingError if
// the role holds a permission the actor lacks.
func DeleteRole(tx *gorm.DB, tenantID, actor uuid.UUID, name string) (previous []Permission, err error) {
	if IsBuiltin(name) {
		return nil, ErrBuiltinRole
	}
	if err := lockRoles(tx, tenantID); err != nil {
		return nil, err
	}
	previous, err = RolePermissions(tx, tenantID, name)
	if err != nil {
		return nil, err
	}
	if previous == nil {
		return nil, ErrRoleNotFound
	}
	c, err := loadCeiling(tx, tenantID, actor)
	if err != nil {
		return nil, err
	}
	if err := c.cover(previous, name, "the role's current permissions"); err != nil {
		return nil, err
	}
	var n int64
	if err := tx.Raw("SELECT count(*) FROM public.memberships WHERE tenant_id = ? AND role = ?", tenantID, name).Scan(&n).Error; err != nil {
		return nil, fmt.Errorf("count role members: %w", err)
	}
	if n > 0 {
		return nil, ErrRoleInUse
	}
	if err := tx.Exec("DELETE FROM "+ruleTable+" WHERE ptype = 'p' AND v0 = ? AND v1 = ?", name, tenantID.String()).Error; err != nil {
		return nil, fmt.Errorf("delete role: %w", err)
	}
	return previous, nil
}

// lockRoles serialises role and membership changes of one tenant: it is the
// same advisory lock SetMemberRole and RemoveMember take, so a role cannot be
// deleted while a member is being given it.
func lockRoles(tx *gorm.DB, tenantID uuid.UUID) error {
	return tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 1))", tenantID.String()).Error
}
