package rbac

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// System is the actor of changes that no role ceiling limits: provisioning
// (the creator becomes owner) and the operator's CLI. Every change made on
// behalf of a user names that user instead.
var System = uuid.Nil

// ErrAboveCeiling is returned (wrapped in a *CeilingError) when a change
// would grant, take away or alter a permission the actor does not hold.
var ErrAboveCeiling = errors.New("the change reaches above the actor's own permissions")

// CeilingError says which permission put a change above the actor's ceiling
// and whose it is.
type CeilingError struct {
	// Permission is the first permission the actor lacks.
	Permission Permission
	// Role is the role that holds it.
	Role string
	// Subject says how the role is involved: "the new role", "the member's
	// current role", "the role's current permissions" or "the role's new
	// permissions".
	Subject string
}

func (e *CeilingError) Error() string {
	return fmt.Sprintf("%s (%s) holds %s, which the actor does not", e.Subject, e.Role, e.Permission)
}

func (e *CeilingError) Unwrap() error { return ErrAboveCeiling }

// heldPermissions returns the permissions the user holds in the tenant
// through their membership, read from the database in the caller's
// transaction (after the tenant's advisory lock, so a concurrent demotion
// of the actor is seen). A non-member holds nothing.
func heldPermissions(tx *gorm.DB, tenantID, userID uuid.UUID) ([]Permission, error) {
	var roles []string
	if err := tx.Raw("SELECT role FROM public.memberships WHERE tenant_id = ? AND user_id = ?", tenantID, userID).Scan(&roles).Error; err != nil {
		return nil, fmt.Errorf("actor's role: %w", err)
	}
	if len(roles) == 0 {
		return nil, nil
	}
	return RolePermissions(tx, tenantID, roles[0])
}

// ceiling is the set of permissions an actor holds while a change is made.
// The zero ceiling (System) allows everything.
type ceiling struct {
	system bool
	held   []Permission
}

func loadCeiling(tx *gorm.DB, tenantID, actor uuid.UUID) (ceiling, error) {
	if actor == System {
		return ceiling{system: true}, nil
	}
	held, err := heldPermissions(tx, tenantID, actor)
	if err != nil {
		return ceiling{}, err
	}
	return ceiling{held: held}, nil
}

// cover returns a *CeilingError if ps holds a permission the actor lacks.
func (c ceiling) cover(ps []Permission, role, subject string) error {
	if c.system {
		return nil
	}
	for _, p := range ps {
		if !slices.Contains(c.held, p) {
			return &CeilingError{Permission: p, Role: role, Subject: subject}
		}
	}
	return nil
}

// coverRole is cover for a role's current permissions ("" = no role).
func (c ceiling) coverRole(tx *gorm.DB, tenantID uuid.UUID, role, subject string) error {
	if c.system || role == "" {
		return nil
	}
	ps, err := RolePermissions(tx, tenantID, role)
	if err != nil {
		return err
	}
	return c.cover(ps, role, subject)
}
