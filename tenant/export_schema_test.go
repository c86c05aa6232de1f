package tenant_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// exportFiles runs Registry.Export and keeps every emitted file in memory
// (small test tenants), calling during(path) before each file is read.
func exportFiles(t *testing.T, reg *tenant.Registry, slug string, during func(path string)) (*tenant.ExportSnapshot, map[string][]byte, error) {
	t.Helper()
	files := map[string][]byte{}
	snap, err := reg.Export(context.Background(), slug, &tenant.ExportOptions{TempDir: t.TempDir()},
		func(ctx context.Context, path string, size int64, body io.Reader) error {
			if during != nil {
				during(path)
			}
			b, err := io.ReadAll(body)
			if err != nil {
				return err
			}
			if int64(len(b)) != size {
				t.Errorf("%s: size %d announced, %d read", path, size, len(b))
			}
			files[path] = b
			return nil
		})
	return snap, files, err
}

func csvRecords(t *testing.T, b []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("not CSV: %v\n%s", err, b)
	}
	if len(recs) == 0 {
		t.Fatal("CSV without header")
	}
	return recs
}

// The export is one snapshot: a row committed while it runs is in no file,
// the tenant's schema lock is held throughout and released afterwards, and
// only the exported tenant's rows are there.
func TestExportIsOneSnapshotOfOneTenant(t *testing.T) {
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	a, b := provision(t, reg, 0), provision(t, reg, 0)
	insertProject(t, db, a.Scope(), "in-a-before")
	insertProject(t, db, a.Scope(), "in-a-before")
	insertProject(t, db, b.Scope(), "in-b")

	tryLock := func(shared bool) bool {
		fn := "pg_try_advisory_lock"
		if shared {
			fn += "_shared"
		}
		var got bool
		conn, err := tenant.SQLDB(db).Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.QueryRowContext(context.Background(), "SELECT "+fn+"(hashtextextended($1, 0))", a.SchemaName).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got {
			unlock := "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
			if shared {
				unlock = "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))"
			}
			if _, err := conn.ExecContext(context.Background(), unlock, a.SchemaName); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}

	var lockedDuring, sharedDuring bool
	snap, files, err := exportFiles(t, reg, a.Slug, func(path string) {
		if path == "tables/audit_log.csv" { // before projects.csv (tables go by name)
			insertProject(t, db, a.Scope(), "in-a-during")
			lockedDuring = !tryLock(false)
			sharedDuring = tryLock(true)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !lockedDuring || !sharedDuring {
		t.Errorf("during the export: exclusive schema lock refused = %v (want true), shared granted = %v (want true)", lockedDuring, sharedDuring)
	}
	if !tryLock(false) {
		t.Error("the schema lock is still held after the export")
	}

	var names []string
	for _, tb := range snap.Tables {
		names = append(names, tb.Name)
	}
	for _, want := range []string{"audit_log", "projects", "tasks", "expenses", "milestones", "documents", "document_versions"} {
		if !slices.Contains(names, want) {
			t.Errorf("table %s not exported (got %v)", want, names)
		}
	}
	if snap.Tenant.ID != a.ID || snap.Tenant.State != tenant.StateActive || snap.Tenant.SchemaVersion != reg.LatestVersion() {
		t.Errorf("tenant in snapshot: %+v", snap.Tenant)
	}
	for _, tb := range append(slices.Clone(snap.Tables), snap.Public...) {
		recs := csvRecords(t, files[tb.File])
		if int64(len(recs)-1) != tb.Rows || int64(len(files[tb.File])) != tb.Bytes {
			t.Errorf("%s: %d records and %d bytes, reported %d rows and %d bytes", tb.File, len(recs)-1, len(files[tb.File]), tb.Rows, tb.Bytes)
		}
	}

	recs := csvRecords(t, files["tables/projects.csv"])
	header := recs[0]
	if slices.Contains(header, "search") || !slices.Contains(header, "id") || !slices.Contains(header, "name") {
		t.Errorf("projects header %v: want stored columns only (no generated search)", header)
	}
	nameCol := slices.Index(header, "name")
	var got []string
	for _, r := range recs[1:] {
		got = append(got, r[nameCol])
	}
	if !slices.Equal(got, []string{"in-a-before", "in-a-before"}) {
		t.Errorf("projects.csv names %v: want this tenant's two rows of the snapshot only", got)
	}
	if len(snap.Documents) != 0 {
		t.Errorf("documents %v in a tenant without any", snap.Documents)
	}
	for _, p := range snap.Public {
		if strings.Contains(string(files[p.File]), b.ID.String()) {
			t.Errorf("%s names the other tenant", p.File)
		}
	}
	if h := csvRecords(t, files["public/plugins.csv"])[0]; slices.Contains(h, "signing_secret") {
		t.Errorf("plugins.csv exports the signing secret: %v", h)
	}
}

// A tenant whose schema is behind still exports (tables from the catalog).
func TestExportOlderSchemaAndUnknownSlug(t *testing.T) {
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	old := provision(t, reg, 1)
	insertProject(t, db, old.Scope(), "old")
	snap, files, err := exportFiles(t, reg, old.Slug, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range snap.Tables {
		names = append(names, tb.Name)
	}
	if !slices.Equal(names, []string{"audit_log", "projects"}) || snap.Tenant.SchemaVersion != 1 {
		t.Errorf("version 1 schema exported tables %v at version %d", names, snap.Tenant.SchemaVersion)
	}
	if n := len(csvRecords(t, files["tables/projects.csv"])) - 1; n != 1 {
		t.Errorf("projects rows %d, want 1", n)
	}

	_, files, err = exportFiles(t, reg, "no-such-"+testenv.Slug("x"), nil)
	if !errors.Is(err, tenant.ErrNotFound) || len(files) != 0 {
		t.Errorf("unknown slug: err %v, %d files; want ErrNotFound and none", err, len(files))
	}
}
