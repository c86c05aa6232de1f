package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// Citus schema-based sharding (citus_schema_distribute, or
// citus.enable_schema_based_sharding for new schemas) moves a schema's
// tables to one worker node as a colocation group. That works only for a
// self-contained schema: nothing in it may depend on another schema's
// objects, except PostgreSQL's built-ins (present on every node), and
// nothing outside may depend on it. Citus is not installable here
// (no postgresql-15-citus package in this machine's Debian), so these are
// checked on the real catalog of a tenant provisioned at the latest
// migration; a migration that breaks one fails here.

// crossSchemaDependencies lists the catalog dependencies (pg_depend) that
// cross the schema's boundary: foreign keys, defaults, column types,
// generated columns, indexes, views, triggers, inheritance and policies of
// the schema on other schemas' objects (sequences, functions, types,
// tables, collations, operators, text search configurations), and other
// schemas' objects on the schema's. pg_catalog is allowed (on every node);
// TOAST tables belong to their table.
const crossSchemaDependencies = `
WITH objs AS (
  SELECT 'pg_class'::regclass AS classid, oid AS objid, relnamespace AS ns FROM pg_class
  UNION ALL SELECT 'pg_proc'::regclass, oid, pronamespace FROM pg_proc
  UNION ALL SELECT 'pg_type'::regclass, oid, typnamespace FROM pg_type
  UNION ALL SELECT 'pg_constraint'::regclass, oid, connamespace FROM pg_constraint
  UNION ALL SELECT 'pg_attrdef'::regclass, ad.oid, c.relnamespace FROM pg_attrdef ad JOIN pg_class c ON c.oid = ad.adrelid
  UNION ALL SELECT 'pg_trigger'::regclass, tg.oid, c.relnamespace FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
  UNION ALL SELECT 'pg_rewrite'::regclass, rw.oid, c.relnamespace FROM pg_rewrite rw JOIN pg_class c ON c.oid = rw.ev_class
  UNION ALL SELECT 'pg_policy'::regclass, p.oid, c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
  UNION ALL SELECT 'pg_collation'::regclass, oid, collnamespace FROM pg_collation
  UNION ALL SELECT 'pg_operator'::regclass, oid, oprnamespace FROM pg_operator
  UNION ALL SELECT 'pg_opclass'::regclass, oid, opcnamespace FROM pg_opclass
  UNION ALL SELECT 'pg_opfamily'::regclass, oid, opfnamespace FROM pg_opfamily
  UNION ALL SELECT 'pg_ts_config'::regclass, oid, cfgnamespace FROM pg_ts_config
  UNION ALL SELECT 'pg_ts_dict'::regclass, oid, dictnamespace FROM pg_ts_dict
  UNION ALL SELECT 'pg_statistic_ext'::regclass, oid, stxnamespace FROM pg_statistic_ext
  UNION ALL SELECT 'pg_namespace'::regclass, oid, oid FROM pg_namespace
  UNION ALL SELECT 'pg_extension'::regclass, oid, extnamespace FROM pg_extension
)
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' -> ' || pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
FROM pg_depend d
JOIN objs a ON a.classid = d.classid AND a.objid = d.objid
JOIN objs b ON b.classid = d.refclassid AND b.objid = d.refobjid
WHERE (a.ns = ?::regnamespace) <> (b.ns = ?::regnamespace)
  AND NOT (a.ns = ?::regnamespace AND b.ns = 'pg_catalog'::regnamespace)
  AND NOT (b.ns = ?::regnamespace AND a.ns = 'pg_toast'::regnamespace)
ORDER BY 1`

// distributionViolations lists what keeps schema from being distributed
// on its own, read from the catalog through tx (which may hold uncommitted
// DDL).
func distributionViolations(t *testing.T, tx *gorm.DB, schema string) []string {
	t.Helper()
	var out []string
	add := func(prefix, query string, args ...any) {
		t.Helper()
		var rows []string
		if err := tx.Raw(query, args...).Scan(&rows).Error; err != nil {
			t.Fatalf("%s: %v", prefix, err)
		}
		for _, r := range rows {
			out = append(out, prefix+": "+r)
		}
	}
	add("crosses the schema", crossSchemaDependencies, schema, schema, schema, schema)
	// Keys are UUIDs (v7, made by the application) or bigints: a 32-bit
	// key can run out, and ids never come from a sequence another schema
	// (or node) shares.
	add("primary key not uuid or bigint", `SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
		JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
		WHERE k.contype = 'p' AND c.relnamespace = ?::regnamespace AND a.atttypid NOT IN ('uuid'::regtype, 'bigint'::regtype)
		ORDER BY 1`, schema)
	add("table without a primary key", `SELECT c.relname FROM pg_class c
		WHERE c.relnamespace = ?::regnamespace AND c.relkind IN ('r', 'p')
		AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') ORDER BY 1`, schema)
	add("serial or identity column narrower than bigint", `SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
		WHERE c.relnamespace = ?::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
		AND (a.attidentity <> '' OR pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%')
		AND a.atttypid <> 'bigint'::regtype ORDER BY 1`, schema)
	// The catalog does not record what a function body reads: a function
	// in a tenant schema needs a review (and this test an extension)
	// before a migration adds one.
	add("function (its body is not in the catalog's dependencies)", `SELECT p.oid::regprocedure::text FROM pg_proc p
		WHERE p.pronamespace = ?::regnamespace ORDER BY 1`, schema)
	// Tenants reach their rows through their schema only: no relation of
	// another schema inherits from, or is a partition of, one of its tables.
	add("inheritance across schemas", `SELECT i.inhrelid::regclass || ' inherits ' || i.inhparent::regclass FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
		WHERE (c.relnamespace = ?::regnamespace) <> (p.relnamespace = ?::regnamespace) ORDER BY 1`, schema, schema)
	return out
}

// A tenant at the latest migration is self-contained and keyed by UUIDs.
func TestTenantSchemaIsDistributable(t *testing.T) {
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	tn := provision(t, reg, 0)
	if v := distributionViolations(t, db, tn.SchemaName); len(v) > 0 {
		t.Fatalf("tenant schema %s cannot be distributed with Citus schema-based sharding:\n%s", tn.SchemaName, strings.Join(v, "\n"))
	}
	// Not a vacuous pass: the schema has its tables.
	var n int64
	if err := db.Raw("SELECT count(*) FROM pg_class WHERE relnamespace = ?::regnamespace AND relkind IN ('r', 'p')", tn.SchemaName).Scan(&n).Error; err != nil || n == 0 {
		t.Fatalf("the check saw no table in %s (%d, %v): it would pass vacuously", tn.SchemaName, n, err)
	}
}

// Each way a migration could break distributability is caught. The DDL
// runs in a transaction that is rolled back, so nothing stays behind.
func TestDistributabilityCheckCatchesViolations(t *testing.T) {
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	tn, other := provision(t, reg, 0), provision(t, reg, 0)
	probe := "dist_probe_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	cases := []struct {
		name, sql, want string
	}{
		{"ForeignKeyIntoPublic", "ALTER TABLE projects ADD COLUMN owner_id uuid REFERENCES public.users (id)", "crosses the schema"},
		{"ForeignKeyIntoAnotherTenant", fmt.Sprintf("ALTER TABLE tasks ADD COLUMN other_id uuid REFERENCES %q.projects (id)", other.SchemaName), "crosses the schema"},
		{"SequenceOfAnotherSchema", fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE SEQUENCE %[1]s.seq; ALTER TABLE projects ADD COLUMN n bigint DEFAULT nextval('%[1]s.seq')", probe), "crosses the schema"},
		{"FunctionOfAnotherSchema", fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE FUNCTION %[1]s.f() RETURNS text LANGUAGE sql AS 'SELECT 1::text'; ALTER TABLE projects ADD COLUMN x text DEFAULT %[1]s.f()", probe), "crosses the schema"},
		{"TypeOfAnotherSchema", fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE TYPE %[1]s.mood AS ENUM ('ok'); ALTER TABLE projects ADD COLUMN mood %[1]s.mood", probe), "crosses the schema"},
		{"ViewOverPublic", "CREATE VIEW all_tenants AS SELECT id FROM public.tenants", "crosses the schema"},
		{"ViewFromAnotherSchema", fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE VIEW %[1]s.leak AS SELECT id FROM projects", probe), "crosses the schema"},
		{"InheritanceFromAnotherSchema", fmt.Sprintf("CREATE SCHEMA %[1]s; CREATE TABLE %[1]s.child () INHERITS (projects)", probe), "crosses the schema"},
		{"IntegerPrimaryKey", "CREATE TABLE counters (id integer PRIMARY KEY)", "primary key not uuid or bigint"},
		{"SerialColumn", "ALTER TABLE projects ADD COLUMN seq serial", "serial or identity column narrower than bigint"},
		{"TableWithoutPrimaryKey", "CREATE TABLE notes (body text)", "table without a primary key"},
		{"FunctionInTheSchema", "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'", "function"},
	}
	errRollback := errors.New("roll back")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			err := db.WithContext(context.Background()).Transaction(func(tx *gorm.DB) error {
				if err := tx.Exec("SELECT set_config('search_path', ?, true)", `"`+tn.SchemaName+`"`).Error; err != nil {
					return err
				}
				if err := tx.Exec(c.sql).Error; err != nil {
					return fmt.Errorf("the violating DDL failed: %w", err)
				}
				got = distributionViolations(t, tx, tn.SchemaName)
				return errRollback
			})
			if !errors.Is(err, errRollback) {
				t.Fatal(err)
			}
			for _, v := range got {
				if strings.HasPrefix(v, c.want) {
					t.Logf("caught: %s", v)
					return
				}
			}
			t.Fatalf("not caught (want %q): %v", c.want, got)
		})
	}
	if v := distributionViolations(t, db, tn.SchemaName); len(v) > 0 {
		t.Fatalf("the rolled back DDL left violations behind: %v", v)
	}
}
