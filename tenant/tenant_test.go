package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

func provision(t *testing.T, reg *tenant.Registry, version int) *tenant.Tenant {
	t.Helper()
	tn, err := reg.Provision(context.Background(), tenant.ProvisionParams{Slug: testenv.Slug("t"), Name: "T", Version: version})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// insertProject writes a project row whose name marks its tenant.
func insertProject(t *testing.T, db *gorm.DB, sc tenant.Scope, name string) {
	t.Helper()
	err := sc.Tx(context.Background(), db, func(tx *gorm.DB) error {
		// Unqualified on purpose: proves the transaction-local search_path.
		return tx.Exec("INSERT INTO projects (id, key, name, status, created_by) VALUES (?, ?, ?, 'active', ?)",
			uuid.New(), "K"+strings.ToUpper(uuid.NewString()[:6]), name, uuid.New()).Error
	})
	if err != nil {
		t.Fatal(err)
	}
}

func projectNames(t *testing.T, db *gorm.DB, sc tenant.Scope) []string {
	t.Helper()
	var names []string
	if err := db.Table(sc.Table("projects")).Order("name").Pluck("name", &names).Error; err != nil {
		t.Fatal(err)
	}
	return names
}

// opener opens a pool of at most maxConns connections on the test database,
// closed when the test ends: directly (direct), or through a transaction
// pooler (pooler_test.go runs the isolation tests below both ways).
type opener func(t *testing.T, maxConns int) *gorm.DB

func direct(t *testing.T, maxConns int) *gorm.DB {
	t.Helper()
	return openPoolAt(t, testenv.DatabaseURL(), &tenant.DBOptions{MaxOpenConns: maxConns})
}

func openPoolAt(t *testing.T, url string, opts *tenant.DBOptions) *gorm.DB {
	t.Helper()
	db, err := tenant.OpenDB(context.Background(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tenant.SQLDB(db).Close() })
	return db
}

func onlyNamed(names []string, want string) bool {
	for _, n := range names {
		if n != want {
			return false
		}
	}
	return len(names) > 0
}

func TestProvisionCreatesSchemaAtLatestVersion(t *testing.T) {
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	tn := provision(t, reg, 0)
	if tn.SchemaName != tenant.SchemaName(tn.ID) || !strings.HasPrefix(tn.SchemaName, "t_") {
		t.Fatalf("schema %q not derived from id", tn.SchemaName)
	}
	got, err := reg.ByID(context.Background(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SchemaVersion != reg.LatestVersion() || got.State != tenant.StateActive {
		t.Fatalf("got version %d state %s, want %d active", got.SchemaVersion, got.State, reg.LatestVersion())
	}
	t.Run("ErrSlugTaken", func(t *testing.T) {
		_, err := reg.Provision(context.Background(), tenant.ProvisionParams{Slug: tn.Slug, Name: "again"})
		if !errors.Is(err, tenant.ErrSlugTaken) {
			t.Fatalf("got %v, want ErrSlugTaken", err)
		}
	})
	t.Run("ErrInvalidSlug", func(t *testing.T) {
		for _, s := range []string{"", "ab", "Acme", "1abc", "a_b_c", strings.Repeat("a", 41)} {
			if _, err := reg.Provision(context.Background(), tenant.ProvisionParams{Slug: s}); !errors.Is(err, tenant.ErrInvalidSlug) {
				t.Errorf("slug %q: got %v", s, err)
			}
		}
	})
	t.Run("FailedSeedLeavesNothing", func(t *testing.T) {
		slug := testenv.Slug("seed")
		_, err := reg.Provision(context.Background(), tenant.ProvisionParams{Slug: slug, Seed: func(*gorm.DB, *tenant.Tenant) error {
			return errors.New("boom")
		}})
		if err == nil {
			t.Fatal("want error")
		}
		if _, err := reg.BySlug(context.Background(), slug); !errors.Is(err, tenant.ErrNotFound) {
			t.Fatalf("tenant row survived: %v", err)
		}
	})
}

// A pool of ONE connection serving two tenants alternately: nothing of one
// tenant's transaction (search_path) survives into the other's queries.
func TestOneConnectionAlternatingTenants(t *testing.T) {
	testOneConnectionAlternatingTenants(t, direct)
}

func testOneConnectionAlternatingTenants(t *testing.T, open opener) {
	db := open(t, 1)
	testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	a, b := provision(t, reg, 0), provision(t, reg, 0)
	for i := range 20 {
		insertProject(t, db, a.Scope(), "A")
		insertProject(t, db, b.Scope(), "B")
		// An unqualified query outside a tenant transaction must fail loudly,
		// never fall through to the last tenant's schema.
		var n int
		err := db.Raw("SELECT count(*) FROM projects").Scan(&n).Error
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("round %d: unscoped query did not fail: %v", i, err)
		}
	}
	if names := projectNames(t, db, a.Scope()); len(names) != 20 || !onlyNamed(names, "A") {
		t.Fatalf("tenant A sees %v", names)
	}
	if names := projectNames(t, db, b.Scope()); len(names) != 20 || !onlyNamed(names, "B") {
		t.Fatalf("tenant B sees %v", names)
	}
}

// Two tenants hammered concurrently each see only their own rows.
func TestConcurrentTenantsSeeOnlyTheirRows(t *testing.T) {
	testConcurrentTenantsSeeOnlyTheirRows(t, direct)
}

func testConcurrentTenantsSeeOnlyTheirRows(t *testing.T, open opener) {
	ctx := context.Background()
	db := open(t, 4)
	testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	tenants := []*tenant.Tenant{provision(t, reg, 0), provision(t, reg, 0)}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, tn := range tenants {
		name := fmt.Sprint("tenant-", i)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					err := tn.Scope().Tx(ctx, db, func(tx *gorm.DB) error {
						if err := tx.Exec("INSERT INTO projects (id, key, name, status, created_by) VALUES (?, ?, ?, 'active', ?)",
							uuid.New(), "K"+strings.ToUpper(uuid.NewString()[:8]), name, uuid.New()).Error; err != nil {
							return err
						}
						var names []string
						if err := tx.Raw("SELECT DISTINCT name FROM projects").Scan(&names).Error; err != nil {
							return err
						}
						if len(names) != 1 || names[0] != name {
							return fmt.Errorf("%s saw %v", name, names)
						}
						return nil
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, tn := range tenants {
		if names := projectNames(t, db, tn.Scope()); len(names) != 100 || !onlyNamed(names, fmt.Sprint("tenant-", i)) {
			t.Fatalf("tenant %d: %d rows, mixed=%v", i, len(names), !onlyNamed(names, fmt.Sprint("tenant-", i)))
		}
	}
}

// A panic and a rollback in one tenant's transaction leave nothing behind
// for the next tenant's query on the same (only) connection.
func TestPanicAndRollbackThenOtherTenant(t *testing.T) {
	testPanicAndRollbackThenOtherTenant(t, direct)
}

func testPanicAndRollbackThenOtherTenant(t *testing.T, open opener) {
	ctx := context.Background()
	db := open(t, 1)
	var err error
	testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	a, b := provision(t, reg, 0), provision(t, reg, 0)
	insertProject(t, db, b.Scope(), "B")

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic did not propagate")
			}
		}()
		_ = a.Scope().Tx(ctx, db, func(tx *gorm.DB) error {
			tx.Exec("INSERT INTO projects (id, key, name, status, created_by) VALUES (?, 'PANIC', 'A', 'active', ?)", uuid.New(), uuid.New())
			panic("mid-transaction")
		})
	}()
	err = a.Scope().Tx(ctx, db, func(tx *gorm.DB) error {
		tx.Exec("INSERT INTO projects (id, key, name, status, created_by) VALUES (?, 'ROLLED', 'A', 'active', ?)", uuid.New(), uuid.New())
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("want error")
	}
	// Same single connection, other tenant, unqualified: sees B's row only.
	err = b.Scope().Tx(ctx, db, func(tx *gorm.DB) error {
		var names []string
		if err := tx.Raw("SELECT name FROM projects").Scan(&names).Error; err != nil {
			return err
		}
		if len(names) != 1 || names[0] != "B" {
			return fmt.Errorf("tenant B sees %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if names := projectNames(t, db, a.Scope()); len(names) != 0 {
		t.Fatalf("rolled back rows of A persisted: %v", names)
	}
	var sp string
	db.Raw("SHOW search_path").Scan(&sp)
	if strings.Contains(sp, "t_") {
		t.Fatalf("search_path leaked to the pooled connection: %s", sp)
	}
}

// Two schemas at different versions (one has an extra column the other
// lacks) are queried alternately on one connection; with the exec mode we
// chose, no cached plan or description can go stale.
func TestSchemasAtDifferentVersions(t *testing.T) { testSchemasAtDifferentVersions(t, direct) }

func testSchemasAtDifferentVersions(t *testing.T, open opener) {
	ctx := context.Background()
	testenv.DB(t)
	extra := append(tenant.TenantMigrations(), tenant.Migration{Version: len(tenant.TenantMigrations()) + 1, Name: "9999_extra.sql",
		SQL: "ALTER TABLE projects ADD COLUMN color text NOT NULL DEFAULT 'red'"})
	db := open(t, 1)
	reg := tenant.NewRegistry(db, &tenant.Options{Migrations: extra})
	oldT := provision(t, reg, len(extra)-1)
	newT := provision(t, reg, len(extra))
	insertProject(t, db, oldT.Scope(), "old")
	insertProject(t, db, newT.Scope(), "new")
	for i := range 10 {
		for _, tn := range []*tenant.Tenant{oldT, newT} {
			var rows []map[string]any
			if err := db.Raw("SELECT * FROM " + tn.Scope().Table("projects")).Scan(&rows).Error; err != nil {
				t.Fatalf("round %d %s: %v", i, tn.Slug, err)
			}
			_, hasColor := rows[0]["color"]
			if hasColor != (tn == newT) {
				t.Fatalf("round %d: %s color column present=%v", i, tn.Slug, hasColor)
			}
		}
		// Migrate the old one half-way through: the same statement text now
		// returns a different row type.
		if i == 4 {
			if _, err := reg.Migrate(ctx, &tenant.MigrateOptions{Parallel: 1}); err != nil {
				t.Fatal(err)
			}
			oldT.SchemaVersion = len(extra)
			newT = oldT // both now have the column
		}
	}
}

func TestFleetMigrationResumesAndReportsFailures(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	base := tenant.TenantMigrations()
	poisoned := append(base[:len(base):len(base)], tenant.Migration{Version: len(base) + 1, Name: "9999_poison.sql", SQL: `
		DO $$ BEGIN
		  IF EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'poison') THEN
		    RAISE EXCEPTION 'poisoned schema';
		  END IF;
		END $$;
		CREATE TABLE migrated_marker (id int);`})
	reg := tenant.NewRegistry(db, &tenant.Options{Migrations: poisoned})
	good1, bad, good2 := provision(t, reg, len(base)), provision(t, reg, len(base)), provision(t, reg, len(base))
	if err := db.Exec("CREATE TABLE " + bad.Scope().Table("poison") + " (id int)").Error; err != nil {
		t.Fatal(err)
	}
	var progress []string
	rep, err := reg.Migrate(ctx, &tenant.MigrateOptions{Parallel: 2, Progress: func(done, total int, slug string, err error) {
		progress = append(progress, slug)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.Failures[bad.Slug]; !ok || !strings.Contains(rep.Failures[bad.Slug], "poisoned") {
		t.Fatalf("failure of %s not reported: %v", bad.Slug, rep.Failures)
	}
	for _, g := range []*tenant.Tenant{good1, good2} {
		got, _ := reg.ByID(ctx, g.ID)
		if got.SchemaVersion != len(poisoned) {
			t.Fatalf("%s at %d", g.Slug, got.SchemaVersion)
		}
		if _, ok := rep.Failures[g.Slug]; ok {
			t.Fatalf("%s reported failed", g.Slug)
		}
	}
	if len(progress) < 3 {
		t.Fatalf("progress called %d times", len(progress))
	}
	gotBad, _ := reg.ByID(ctx, bad.ID)
	if gotBad.SchemaVersion != len(base) {
		t.Fatalf("failed tenant moved to %d", gotBad.SchemaVersion)
	}
	// Fix the cause; the next run resumes with only the failed tenant.
	db.Exec("DROP TABLE " + bad.Scope().Table("poison"))
	rep, err = reg.Migrate(ctx, &tenant.MigrateOptions{Parallel: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) != 0 {
		t.Fatalf("second run failures: %v", rep.Failures)
	}
	gotBad, _ = reg.ByID(ctx, bad.ID)
	if gotBad.SchemaVersion != len(poisoned) {
		t.Fatalf("resumed tenant at %d", gotBad.SchemaVersion)
	}
	// Leave the shared test database at the embedded version for other tests.
	for _, tn := range []*tenant.Tenant{good1, bad, good2} {
		db.Exec("UPDATE public.tenants SET state = 'deleted' WHERE id = ?", tn.ID)
	}
}

// With nothing to do, a fleet migration is one query whatever the number of
// tenants (the registry records each schema's version).
func TestMigrateNothingToDoIsOneQuery(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	provision(t, reg, 0)
	// Bring every tenant of the shared test database up to date first.
	if _, err := reg.Migrate(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var queries int
	counting := db.Session(&gorm.Session{NewDB: true})
	counting.Callback().Query().Before("gorm:query").Register("count_queries", func(*gorm.DB) { queries++ })
	counting.Callback().Raw().Before("gorm:raw").Register("count_raw", func(*gorm.DB) { queries++ })
	t.Cleanup(func() {
		counting.Callback().Query().Remove("count_queries")
		counting.Callback().Raw().Remove("count_raw")
	})
	start := time.Now()
	rep, err := tenant.NewRegistry(counting, nil).Migrate(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Pending != 0 || queries != 1 {
		t.Fatalf("pending %d, queries %d; want 0 pending in 1 query", rep.Pending, queries)
	}
	t.Logf("no-op fleet migration: %s", time.Since(start))
}

// A tenant whose schema is gone by the time its migration runs (purged after
// the fleet migration listed it) must not be migrated into public: PostgreSQL
// skips a missing schema of search_path, so unqualified DDL would land there.
func TestMigrationNeverFallsBackToPublic(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	base := tenant.TenantMigrations()
	probe := "mig_probe_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS public." + probe) })
	ms := append(base[:len(base):len(base)], tenant.Migration{Version: len(base) + 1, Name: "9999_probe.sql",
		SQL: "CREATE TABLE " + probe + " (id int)"})
	reg := tenant.NewRegistry(db, &tenant.Options{Migrations: ms})
	inPublic := func() bool {
		var n int64
		if err := db.Raw("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ?", probe).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	// The registry row is live but the schema is missing.
	tn := provision(t, reg, len(base))
	t.Cleanup(func() { db.Exec("UPDATE public.tenants SET state = 'deleted' WHERE id = ?", tn.ID) })
	if err := db.Exec(`DROP SCHEMA "` + tn.SchemaName + `" CASCADE`).Error; err != nil {
		t.Fatal(err)
	}
	if err := reg.MigrateOne(ctx, tn.ID, len(ms)); err == nil {
		t.Error("migrating a tenant without a schema succeeded")
	}
	if inPublic() {
		t.Fatalf("the tenant migration created public.%s", probe)
	}

	// Deleted and purged after it was listed: nothing to do, nothing created.
	gone := provision(t, reg, len(base))
	if err := db.Exec("UPDATE public.tenants SET state = 'deleted' WHERE id = ?", gone.ID).Error; err != nil {
		t.Fatal(err)
	}
	if err := reg.Purge(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	_ = reg.MigrateOne(ctx, gone.ID, len(ms))
	if inPublic() {
		t.Fatalf("migrating a purged tenant created public.%s", probe)
	}
	var rows int64
	db.Raw("SELECT count(*) FROM public.tenants WHERE id = ?", gone.ID).Scan(&rows)
	if rows != 0 {
		t.Fatal("migrating a purged tenant wrote its registry row back")
	}
}
