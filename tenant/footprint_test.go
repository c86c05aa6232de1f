package tenant_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// What one tenant costs PostgreSQL, measured in a database of its own:
// relations and catalog rows per schema, disk per empty tenant (the
// catalog's growth included), and the catalog cache a backend keeps per
// tenant schema it touched. docs/SCALING.md derives tenants per node from
// these; `make test-scale` (PROMANAGE_SCALE=long) provisions more tenants
// for steadier figures. The bounds asserted are an order of magnitude
// above today's figures: they catch a migration that multiplies a tenant's
// footprint, not noise.
func TestTenantFootprint(t *testing.T) {
	n := 20
	if os.Getenv("PROMANAGE_SCALE") == "long" {
		n = 500
	}
	ctx := context.Background()
	testenv.DB(t)
	name := "promanage_footprint_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	u, err := url.Parse(testenv.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	admin := *u
	admin.Path = "/postgres"
	ac, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	ac.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if ac, err := pgx.Connect(ctx, admin.String()); err == nil {
			ac.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			ac.Close(ctx)
		}
	})
	u.Path = "/" + name
	db := openPoolAt(t, u.String(), &tenant.DBOptions{MaxOpenConns: 4})
	if err := tenant.MigratePublic(ctx, db); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		var b int64
		if err := db.Raw("SELECT pg_database_size(current_database())").Scan(&b).Error; err != nil {
			t.Fatal(err)
		}
		return b
	}
	catalogRows := func() int64 {
		var r int64
		err := db.Raw(`SELECT (SELECT count(*) FROM pg_class) + (SELECT count(*) FROM pg_attribute) + (SELECT count(*) FROM pg_depend)
			+ (SELECT count(*) FROM pg_constraint) + (SELECT count(*) FROM pg_type) + (SELECT count(*) FROM pg_index)`).Scan(&r).Error
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	size0, rows0 := size(), catalogRows()
	reg := tenant.NewRegistry(db, nil)
	var schemas []string
	start := time.Now()
	for range n {
		tn, err := reg.Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("fp"), Name: "Footprint"})
		if err != nil {
			t.Fatal(err)
		}
		schemas = append(schemas, tn.SchemaName)
	}
	provisioning := time.Since(start) / time.Duration(n)
	perTenantBytes := (size() - size0) / int64(n)
	perTenantRows := (catalogRows() - rows0) / int64(n)
	var relations int64
	db.Raw("SELECT count(*) FROM pg_class WHERE relnamespace = ?::regnamespace", schemas[0]).Scan(&relations)

	// One backend touches every tenant's tables, as a long-lived pooled
	// connection serving all tenants would.
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	backendBytes := func() int64 {
		var b int64
		if err := conn.QueryRow(ctx, "SELECT sum(total_bytes) FROM pg_backend_memory_contexts").Scan(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	var tables []string
	rows, err := conn.Query(ctx, "SELECT relname FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'r'", schemas[0])
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		tables = append(tables, s)
	}
	rows.Close()
	before := backendBytes()
	for _, s := range schemas {
		for _, tb := range tables {
			if _, err := conn.Exec(ctx, "SELECT * FROM "+pgx.Identifier{s, tb}.Sanitize()+" LIMIT 1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	perSchemaCache := (backendBytes() - before) / int64(n)

	t.Logf("%d tenants: %d relations per schema, %d catalog rows per tenant, %s of disk per empty tenant, %s of backend cache per tenant schema touched (all %d tables), provisioning %v per tenant",
		n, relations, perTenantRows, kib(perTenantBytes), kib(perSchemaCache), len(tables), provisioning.Round(time.Millisecond))
	for _, c := range []struct {
		what       string
		got, bound int64
	}{
		{"relations per tenant schema", relations, 200},
		{"catalog rows per tenant", perTenantRows, 10_000},
		{"disk bytes per empty tenant", perTenantBytes, 16 << 20},
		{"backend cache bytes per tenant schema", perSchemaCache, 8 << 20},
	} {
		if c.got <= 0 || c.got > c.bound {
			t.Errorf("%s: %d, want between 1 and %d", c.what, c.got, c.bound)
		}
	}
}

func kib(b int64) string { return fmt.Sprintf("%.0f KiB", float64(b)/1024) }
