package main

import (
	"context"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/promanage/promanage/internal/testenv"
)

// asRole returns dbURL with the user changed (the test server trusts local
// connections, so the role's LOGIN and privileges are what is tested).
func asRole(t *testing.T, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

func pgConnect(t *testing.T, dbURL string, params map[string]string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// The least-privilege roles of deploy/k8s/base/db/bootstrap.sql work with the
// real binary: `promanage migrate` as the migration role, the api as the app
// role provisioning a tenant at runtime (CREATE SCHEMA and the tenant
// migrations in one transaction), a later fleet migration altering that
// tenant's schema, and a purge dropping it; the app role cannot change the
// platform tables, and the Kratos role cannot even connect.
func TestDatabaseRoles(t *testing.T) {
	ctx := context.Background()
	sqlText, err := os.ReadFile(filepath.Join("..", "..", "deploy/k8s/base/db/bootstrap.sql"))
	if err != nil {
		t.Fatal(err)
	}
	// A database of its own, and role names of their own (roles are
	// cluster-wide): the bootstrap takes them as settings.
	name := "promanage_roles_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	admin := mustWithDatabase(t, testenv.DatabaseURL(), name)
	if err := ensureDatabase(ctx, admin); err != nil {
		t.Fatal(err)
	}
	suffix := strings.ReplaceAll(uuid.NewString(), "-", "")[:8]
	app, mig, kratos := "promanage_app_"+suffix, "promanage_migrate_"+suffix, "kratos_"+suffix
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, mustWithDatabase(t, admin, "postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
		for _, r := range []string{mig, app, kratos} {
			if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize()); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
	})
	settings := map[string]string{
		"promanage.app_role": app, "promanage.migrate_role": mig, "promanage.kratos_role": kratos,
		"promanage.app_password": "app-" + suffix, "promanage.migrate_password": "migrate-" + suffix, "promanage.kratos_password": "kratos-" + suffix,
	}
	for range 2 { // idempotent: it runs on every release
		if _, err := pgConnect(t, admin, settings).Exec(ctx, string(sqlText)); err != nil {
			t.Fatalf("bootstrap.sql: %v", err)
		}
	}
	t.Run("MissingPassword", func(t *testing.T) {
		partial := map[string]string{"promanage.app_role": app, "promanage.migrate_role": mig, "promanage.kratos_role": kratos, "promanage.app_password": "x"}
		if _, err := pgConnect(t, admin, partial).Exec(ctx, string(sqlText)); err == nil || !strings.Contains(err.Error(), "promanage.migrate_password is not set") {
			t.Fatalf("bootstrap without a password: %v", err)
		}
	})

	appURL, migURL := asRole(t, admin, app), asRole(t, admin, mig)
	migrate := func() {
		t.Helper()
		if err := NewMain(io.Discard, io.Discard).Run(ctx, []string{"migrate", "-database-url", migURL, "-log-level", "error", "-quiet"}); err != nil {
			t.Fatalf("promanage migrate as %s: %v", mig, err)
		}
	}
	migrate()

	base, _ := runWithMetrics(t, "serve", appURL)
	alice := client{t: t, base: base, token: testenv.SignUp(t, "roles").Token}
	slug := testenv.Slug("roles")
	tn := alice.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Roles"}).json(t)
	alice.want(201, "POST", "/v1/tenants/"+slug+"/projects", projectBody("ROLE", 100))
	schema := "t_" + strings.ReplaceAll(tn["id"].(string), "-", "")
	var owner string
	if err := pgConnect(t, admin, nil).QueryRow(ctx, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema).Scan(&owner); err != nil || owner != app {
		t.Fatalf("tenant schema %s owned by %q (%v), want %s", schema, owner, err, app)
	}

	asApp, asMig := pgConnect(t, appURL, nil), pgConnect(t, migURL, nil)
	for _, stmt := range []string{
		"DROP TABLE public.tenants", "ALTER TABLE public.tenants ADD COLUMN x int", "CREATE TABLE public.x (id int)",
		"TRUNCATE public.outbox", "CREATE ROLE someone", "ALTER ROLE " + pgx.Identifier{app}.Sanitize() + " SUPERUSER",
	} {
		if _, err := asApp.Exec(ctx, stmt); err == nil {
			t.Errorf("the app role may %s", stmt)
		}
	}
	// A fleet migration changes the tenant's schema (owned by app) and adds a
	// table the app then uses.
	q := pgx.Identifier{schema}.Sanitize()
	for _, stmt := range []string{"ALTER TABLE " + q + ".projects ADD COLUMN roles_test int", "CREATE TABLE " + q + ".roles_test (id int)"} {
		if _, err := asMig.Exec(ctx, stmt); err != nil {
			t.Fatalf("migration role: %s: %v", stmt, err)
		}
	}
	if _, err := asApp.Exec(ctx, "INSERT INTO "+q+".roles_test VALUES (1)"); err != nil {
		t.Fatalf("the app role cannot use a table the migration added: %v", err)
	}
	migrate() // the whole fleet again, over the app-owned schema

	// Purging drops the schema, including the table the migration role owns.
	if r := alice.do("DELETE", "/v1/tenants/"+slug, nil); r.Status/100 != 2 {
		t.Fatalf("delete tenant: %d %s", r.Status, r.Body)
	}
	if err := NewMain(io.Discard, io.Discard).Run(ctx, []string{"tenant", "purge", "-slug", slug, "-database-url", appURL,
		"-data-dir", t.TempDir(), "-log-level", "error"}); err != nil {
		t.Fatalf("tenant purge as the app role: %v", err)
	}
	var n int
	if err := asApp.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema).Scan(&n); err != nil || n != 0 {
		t.Fatalf("schema %s still exists after purge (%d, %v)", schema, n, err)
	}

	cfg, _ := pgx.ParseConfig(asRole(t, admin, kratos))
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Error("the kratos role may connect to the promanage database")
	}
}
