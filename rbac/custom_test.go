package rbac_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/rbac"
)

func TestValidateCustomRole(t *testing.T) {
	p := func(s string) rbac.Permission {
		v, ok := rbac.ParsePermission(s)
		if !ok {
			t.Fatalf("parse %q", s)
		}
		return v
	}
	cases := []struct {
		name  string
		role  string
		perms []rbac.Permission
		want  error
	}{
		{"OK", "auditor", []rbac.Permission{p("audit:read"), p("projects:read"), p("audit:read")}, nil},
		{"Builtin", "admin", []rbac.Permission{p("projects:read")}, rbac.ErrBuiltinRole},
		{"UpperCase", "Auditor", []rbac.Permission{p("projects:read")}, rbac.ErrInvalidRoleName},
		{"TooShort", "a", []rbac.Permission{p("projects:read")}, rbac.ErrInvalidRoleName},
		{"TooLong", "a23456789012345678901234567890123456789012", []rbac.Permission{p("projects:read")}, rbac.ErrInvalidRoleName},
		{"Empty", "nothing", nil, rbac.ErrEmptyRole},
		{"UnknownPermission", "hacker", []rbac.Permission{p("projects:destroy")}, rbac.ErrInvalidPerm},
		{"OwnerOnlyManageOwners", "crown", []rbac.Permission{p("members:manage_owners")}, rbac.ErrOwnerOnlyPerm},
		{"OwnerOnlyTenantDelete", "crown", []rbac.Permission{p("tenant:delete")}, rbac.ErrOwnerOnlyPerm},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rbac.ValidateCustomRole(tc.role, tc.perms)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil && len(got) != 2 {
				t.Fatalf("permissions not deduplicated: %v", got)
			}
		})
	}
}

// fixture makes a tenant row (the registry is another package's business;
// a bare row is enough for memberships) and returns its id.
func fixture(t *testing.T, db *gorm.DB) (tenantID uuid.UUID, owner uuid.UUID) {
	t.Helper()
	tenantID, owner = uuid.New(), uuid.New()
	if err := db.Exec(`INSERT INTO public.tenants (id, slug, name, state, schema_name) VALUES (?, ?, 'rbac test', 'active', ?)`,
		tenantID, testenv.Slug("rbac"), "t_rbac_"+uuid.NewString()[:8]).Error; err != nil {
		t.Fatal(err)
	}
	for _, u := range []uuid.UUID{owner} {
		if err := db.Exec(`INSERT INTO public.users (id, email) VALUES (?, ?)`, u, testenv.Email("rbac")).Error; err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return rbac.SeedTenant(tx, tenantID, owner) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Exec("DELETE FROM public.casbin_rule WHERE (ptype = 'p' AND v1 = ?) OR (ptype = 'g' AND v2 = ?)", tenantID.String(), tenantID.String())
		db.Exec("DELETE FROM public.tenants WHERE id = ?", tenantID)
		db.Exec("DELETE FROM public.users WHERE id = ?", owner)
	})
	return tenantID, owner
}

type ruleRow struct {
	ID int64
	V2 string
	V3 string
}

func roleRows(t *testing.T, db *gorm.DB, tenantID uuid.UUID, role string) map[string]int64 {
	t.Helper()
	var rows []ruleRow
	if err := db.Raw("SELECT id, v2, v3 FROM public.casbin_rule WHERE ptype = 'p' AND v0 = ? AND v1 = ?", role, tenantID.String()).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.V2+":"+r.V3] = r.ID
	}
	return out
}

// Changing a role touches only the rows that differ: unchanged permissions
// keep their row (no truncate-and-rewrite, so a concurrent change on another
// replica is never lost).
func TestPutRoleIsIncremental(t *testing.T) {
	db := testenv.DB(t)
	tid, owner := fixture(t, db)
	perms := func(ss ...string) []rbac.Permission {
		var out []rbac.Permission
		for _, s := range ss {
			p, _ := rbac.ParsePermission(s)
			out = append(out, p)
		}
		return out
	}
	put := func(ps []rbac.Permission) []rbac.Permission {
		var prev []rbac.Permission
		err := db.Transaction(func(tx *gorm.DB) (err error) {
			prev, err = rbac.PutRole(tx, tid, rbac.System, "reviewer", ps)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return prev
	}
	if prev := put(perms("projects:read", "tasks:read")); prev != nil {
		t.Fatalf("new role has previous permissions %v", prev)
	}
	before := roleRows(t, db, tid, "reviewer")
	otherBefore := roleRows(t, db, tid, rbac.RoleViewer)
	prev := put(perms("projects:read", "documents:read"))
	if !slices.Equal(prev, perms("projects:read", "tasks:read")) {
		t.Fatalf("previous = %v", prev)
	}
	after := roleRows(t, db, tid, "reviewer")
	if len(after) != 2 || after["projects:read"] != before["projects:read"] || after["documents:read"] == 0 || after["tasks:read"] != 0 {
		t.Fatalf("rows before %v, after %v", before, after)
	}
	if got := roleRows(t, db, tid, rbac.RoleViewer); len(got) != len(otherBefore) {
		t.Fatalf("viewer rows changed: %v -> %v", otherBefore, got)
	}
	err := db.Transaction(func(tx *gorm.DB) error {
		_, err := rbac.PutRole(tx, tid, rbac.System, rbac.RoleAdmin, perms("projects:read"))
		return err
	})
	if !errors.Is(err, rbac.ErrBuiltinRole) {
		t.Fatalf("editing a built-in role: %v", err)
	}

	// A role in use cannot be deleted; once unused it can.
	if err := db.Transaction(func(tx *gorm.DB) error {
		_, err := rbac.SetMemberRole(tx, tid, rbac.System, owner, "reviewer")
		return err
	}); !errors.Is(err, rbac.ErrLastOwner) {
		t.Fatalf("demoting the last owner: %v", err)
	}
	second := uuid.New()
	if err := db.Exec(`INSERT INTO public.users (id, email) VALUES (?, ?)`, second, testenv.Email("rbac2")).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DELETE FROM public.users WHERE id = ?", second) })
	if err := db.Transaction(func(tx *gorm.DB) error {
		_, err := rbac.SetMemberRole(tx, tid, rbac.System, second, "reviewer")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	del := func(name string) error {
		return db.Transaction(func(tx *gorm.DB) error { _, err := rbac.DeleteRole(tx, tid, rbac.System, name); return err })
	}
	if err := del("reviewer"); !errors.Is(err, rbac.ErrRoleInUse) {
		t.Fatalf("deleting a role in use: %v", err)
	}
	if err := del(rbac.RoleViewer); !errors.Is(err, rbac.ErrBuiltinRole) {
		t.Fatalf("deleting a built-in role: %v", err)
	}
	if err := del("nosuchrole"); !errors.Is(err, rbac.ErrRoleNotFound) {
		t.Fatalf("deleting an unknown role: %v", err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { _, err := rbac.RemoveMember(tx, tid, rbac.System, second); return err }); err != nil {
		t.Fatal(err)
	}
	if err := del("reviewer"); err != nil {
		t.Fatal(err)
	}
	if got := roleRows(t, db, tid, "reviewer"); len(got) != 0 {
		t.Fatalf("rows left after delete: %v", got)
	}
}

// When an invalidation message is lost (no pub/sub at all here), the
// periodic reload (MaxAge) still ends a revoked grant.
func TestEnforcerReconcilesWithoutInvalidation(t *testing.T) {
	db := testenv.DB(t)
	tid, _ := fixture(t, db)
	user := uuid.New()
	if err := db.Exec(`INSERT INTO public.users (id, email) VALUES (?, ?)`, user, testenv.Email("rbac3")).Error; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DELETE FROM public.users WHERE id = ?", user) })
	const maxAge = 300 * time.Millisecond
	es, err := rbac.NewEnforcers(db, &rbac.Options{MaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	allowed := func() bool {
		ok, err := es.Allow(ctx, tid, user, rbac.ObjProjects, rbac.ActCreate)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if allowed() {
		t.Fatal("non-member allowed")
	}
	// Grant directly in the database, as another replica would, with no
	// invalidation published.
	if err := db.Transaction(func(tx *gorm.DB) error {
		_, err := rbac.SetMemberRole(tx, tid, rbac.System, user, rbac.RoleManager)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*maxAge, allowed, true, "grant")
	if err := db.Transaction(func(tx *gorm.DB) error { _, err := rbac.RemoveMember(tx, tid, rbac.System, user); return err }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !allowed() {
		t.Fatal("the cached enforcer was not used at all (test cannot tell reload from no cache)")
	}
	waitFor(t, 5*maxAge, allowed, false, "revocation")
	if d := time.Since(start); d < maxAge/2 {
		t.Fatalf("revocation seen after %v: the enforcer was not cached", d)
	}
}

func waitFor(t *testing.T, max time.Duration, f func() bool, want bool, what string) {
	t.Helper()
	deadline := time.Now().Add(max)
	for f() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s not seen within %v", what, max)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Casbin keeps users and roles in one namespace: a custom role named like a
// user id would give members of that role the named user's role (here an
// admin climbing to owner through a role named after the owner). Such names
// are refused by validation and by the store.
func TestRoleNamedLikeAUserIsRefused(t *testing.T) {
	db := testenv.DB(t)
	tid, _ := fixture(t, db)
	// Kratos ids are random; take one that also matches RoleNamePattern
	// (starts with a letter), as a third of them do.
	victim := uuid.New()
	for victim.String()[0] < 'a' {
		victim = uuid.New()
	}
	admin := uuid.New()
	for _, u := range []uuid.UUID{victim, admin} {
		if err := db.Exec(`INSERT INTO public.users (id, email) VALUES (?, ?)`, u, testenv.Email("rbac4")).Error; err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Exec("DELETE FROM public.users WHERE id = ?", u) })
	}
	set := func(u uuid.UUID, role string) error {
		return db.Transaction(func(tx *gorm.DB) error { _, err := rbac.SetMemberRole(tx, tid, rbac.System, u, role); return err })
	}
	if err := set(victim, rbac.RoleOwner); err != nil {
		t.Fatal(err)
	}
	if err := set(admin, rbac.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	read := []rbac.Permission{{Object: rbac.ObjProjects, Action: rbac.ActRead}}
	if _, err := rbac.ValidateCustomRole(victim.String(), read); !errors.Is(err, rbac.ErrInvalidRoleName) {
		t.Errorf("ValidateCustomRole(%s) = %v, want ErrInvalidRoleName", victim, err)
	}
	err := db.Transaction(func(tx *gorm.DB) error {
		_, err := rbac.PutRole(tx, tid, rbac.System, victim.String(), read)
		return err
	})
	if !errors.Is(err, rbac.ErrInvalidRoleName) {
		t.Errorf("PutRole(%s) = %v, want ErrInvalidRoleName", victim, err)
	}
	if err == nil {
		// What the refused name would have allowed.
		if err := set(admin, victim.String()); err != nil {
			t.Fatal(err)
		}
	}
	es, err := rbac.NewEnforcers(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := es.Allow(context.Background(), tid, admin, rbac.ObjMembers, rbac.ActManageOwners)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatal("an admin got the owner's members:manage_owners through a role named after the owner")
	}
}

// Loading a tenant's policy is a database call on the hot path of every
// tenant request: it runs under the caller's deadline (fasthttp never
// cancels), and a load that failed is retried by the next decision.
func TestEnforcerLoadHonoursDeadline(t *testing.T) {
	db := testenv.DB(t)
	tid, owner := fixture(t, db)
	es, err := rbac.NewEnforcers(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if role, err := es.RoleOf(expired, tid, owner); err == nil {
		t.Fatalf("policy loaded past the caller's deadline (role %q)", role)
	}
	role, err := es.RoleOf(context.Background(), tid, owner)
	if err != nil || role != rbac.RoleOwner {
		t.Fatalf("after a failed load: role %q, %v", role, err)
	}
}

// The role ceiling, checked in the store under the tenant's lock: an actor
// may only touch memberships and roles whose permissions (before and after
// the change) are all theirs; System (provisioning, the operator) is not
// limited.
func TestRoleCeiling(t *testing.T) {
	db := testenv.DB(t)
	tid, owner := fixture(t, db)
	users := map[string]uuid.UUID{}
	for _, name := range []string{"admin", "hr", "viewer", "ops", "rm"} {
		u := uuid.New()
		if err := db.Exec(`INSERT INTO public.users (id, email) VALUES (?, ?)`, u, testenv.Email("ceil")).Error; err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Exec("DELETE FROM public.users WHERE id = ?", u) })
		users[name] = u
	}
	tx := func(f func(tx *gorm.DB) error) error { return db.Transaction(f) }
	setup := func(f func(tx *gorm.DB) error) {
		t.Helper()
		if err := tx(f); err != nil {
			t.Fatal(err)
		}
	}
	p := func(ss ...string) []rbac.Permission {
		var out []rbac.Permission
		for _, s := range ss {
			v, _ := rbac.ParsePermission(s)
			out = append(out, v)
		}
		return out
	}
	hrPerms := append(rbac.BuiltinPermissions(rbac.RoleViewer), p("members:manage")...)
	setup(func(tx *gorm.DB) error {
		for role, ps := range map[string][]rbac.Permission{"hr": hrPerms, "plugin-admin": p("tenant:read", "plugins:manage"),
			"role-manager": p("tenant:read", "roles:manage"), "readers": p("tenant:read")} {
			if _, err := rbac.PutRole(tx, tid, rbac.System, role, ps); err != nil {
				return err
			}
		}
		for name, role := range map[string]string{"admin": rbac.RoleAdmin, "hr": "hr", "viewer": rbac.RoleViewer, "ops": "plugin-admin", "rm": "role-manager"} {
			if _, err := rbac.SetMemberRole(tx, tid, rbac.System, users[name], role); err != nil {
				return err
			}
		}
		return nil
	})

	cases := []struct {
		name string
		op   func(tx *gorm.DB) error
		want bool // allowed
	}{
		{"HRDemotesAdminToViewer", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, users["hr"], users["admin"], rbac.RoleViewer)
			return err
		}, false},
		{"HRRemovesAdmin", func(tx *gorm.DB) error { _, err := rbac.RemoveMember(tx, tid, users["hr"], users["admin"]); return err }, false},
		{"HRPromotesSelfToAdmin", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, users["hr"], users["hr"], rbac.RoleAdmin)
			return err
		}, false},
		{"HRChangesViewerToReaders", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, users["hr"], users["viewer"], "readers")
			return err
		}, true},
		{"AdminDemotesOwner", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, users["admin"], owner, rbac.RoleAdmin)
			return err
		}, false},
		{"RoleManagerStripsHeldRole", func(tx *gorm.DB) error {
			_, err := rbac.PutRole(tx, tid, users["rm"], "plugin-admin", p("tenant:read"))
			return err
		}, false},
		{"RoleManagerGrowsOwnRole", func(tx *gorm.DB) error {
			_, err := rbac.PutRole(tx, tid, users["rm"], "role-manager", p("tenant:read", "roles:manage", "plugins:manage"))
			return err
		}, false},
		{"RoleManagerDeletesRoleAbove", func(tx *gorm.DB) error { _, err := rbac.DeleteRole(tx, tid, users["rm"], "hr"); return err }, false},
		{"RoleManagerEditsRoleBelow", func(tx *gorm.DB) error {
			_, err := rbac.PutRole(tx, tid, users["rm"], "readers", p("tenant:read", "roles:manage"))
			return err
		}, true},
		{"NonMemberActor", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, uuid.New(), users["viewer"], "readers")
			return err
		}, false},
		{"OwnerDemotesAdmin", func(tx *gorm.DB) error {
			_, err := rbac.SetMemberRole(tx, tid, owner, users["admin"], rbac.RoleViewer)
			return err
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tx(tc.op)
			if tc.want && err != nil {
				t.Fatalf("refused: %v", err)
			}
			var ce *rbac.CeilingError
			if !tc.want && (!errors.Is(err, rbac.ErrAboveCeiling) || !errors.As(err, &ce) || !ce.Permission.Valid()) {
				t.Fatalf("err = %v, want a CeilingError", err)
			}
		})
	}
	// Refused changes left nothing behind.
	if got := roleRows(t, db, tid, "plugin-admin"); got["plugins:manage"] == 0 {
		t.Fatalf("plugin-admin lost plugins:manage: %v", got)
	}
}
