package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/promanage/promanage/internal/testenv"
)

// readExport reads a tenant export archive back: its entries by name, in
// archive order, and its manifest.
func readExport(t *testing.T, r io.Reader) (map[string][]byte, []string, exportManifest) {
	t.Helper()
	gz, err := gzip.NewReader(r)
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("bad tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o600 {
			t.Errorf("%s: type %c mode %o, want a regular 0600 file", h.Name, h.Typeflag, h.Mode)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s twice in the archive", h.Name)
		}
		files[h.Name] = b
		order = append(order, h.Name)
	}
	var man exportManifest
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	return files, order, man
}

func readExportFile(t *testing.T, path string) (map[string][]byte, []string, exportManifest) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readExport(t, f)
}

// csvColumn returns the values of one column, by header name.
func csvColumn(t *testing.T, b []byte, col string) []string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("not CSV with a header (%v): %s", err, b)
	}
	i := slices.Index(recs[0], col)
	if i < 0 {
		t.Fatalf("no column %s in %v", col, recs[0])
	}
	var out []string
	for _, r := range recs[1:] {
		out = append(out, r[i])
	}
	return out
}

// runCLIErr runs the binary and returns its error (runCLI fails the test on one).
func runCLIErr(args ...string) error {
	m := NewMain(io.Discard, io.Discard)
	return m.Run(context.Background(), append(args, "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(), "-log-level", "error"))
}

// TestTenantExport builds a tenant through the API (projects, tasks,
// milestone, expense, a document with two versions) next to a rival tenant,
// exports it with `promanage tenant export` while active, suspended and
// soft-deleted, and reads the archives back.
func TestTenantExport(t *testing.T) {
	dir := t.TempDir()
	blobURL := "file://" + filepath.ToSlash(filepath.Join(dir, "blobs"))
	base := server(t, "-blob-url", blobURL, "-secret-key", testSecretKey)
	ownerU := testenv.SignUp(t, "exporter")
	owner := client{t: t, base: base, token: ownerU.Token}
	slug, rival := testenv.Slug("export"), testenv.Slug("rival")
	tp := "/v1/tenants/" + slug
	tenantID := owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Export Co"}).json(t)["id"].(string)
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": rival, "name": "Rival"})
	rivalProject := owner.want(201, "POST", "/v1/tenants/"+rival+"/projects", map[string]any{"key": "RIV", "name": "Rival secret"}).json(t)["id"].(string)

	web := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "WEB", "name": "Website, \"new\"", "status": "active",
		"budget": map[string]any{"amount_minor": 100000, "currency": "EUR"}}).json(t)["id"].(string)
	ops := owner.want(201, "POST", tp+"/projects", map[string]any{"key": "OPS", "name": "Operations"}).json(t)["id"].(string)
	pp := tp + "/projects/" + web
	owner.want(201, "POST", pp+"/tasks", map[string]any{"title": "Write copy\nwith a second line", "due_date": day(5)})
	owner.want(201, "POST", pp+"/tasks", map[string]any{"title": "Launch"})
	owner.want(201, "POST", tp+"/projects/"+ops+"/tasks", map[string]any{"title": "Rotate keys"})
	owner.want(201, "POST", pp+"/milestones", map[string]any{"name": "Beta", "due_date": day(3)})
	owner.want(201, "POST", pp+"/expenses", map[string]any{"amount_minor": 30000, "currency": "EUR", "spent_on": day(0), "category": "design"})
	v1, v2 := randomBytes(70_000, 11), []byte("second version")
	doc := owner.upload(201, pp+"/documents", fileOf("spec.bin", v1)).json(t)["id"].(string)
	owner.upload(201, tp+"/documents/"+doc+"/versions", fileOf("spec.txt", v2))

	out := filepath.Join(dir, slug+".tar.gz")
	stdout := runCLI(t, "tenant", "export", "-slug", slug, "-out", out, "-blob-url", blobURL)
	if !strings.Contains(stdout, "exported tenant "+slug) {
		t.Errorf("export output: %q", stdout)
	}
	files, order, man := readExportFile(t, out)

	t.Run("Manifest", func(t *testing.T) {
		if order[len(order)-1] != "manifest.json" || man.Format != exportFormat {
			t.Errorf("manifest: last entry %s, format %q", order[len(order)-1], man.Format)
		}
		mt := man.Tenant
		if mt.ID != tenantID || mt.Slug != slug || mt.Name != "Export Co" || mt.State != "active" || mt.SchemaVersion < 4 ||
			mt.Schema != "t_"+strings.ReplaceAll(tenantID, "-", "") || man.ExportedAt.IsZero() || man.SnapshotAt.IsZero() {
			t.Errorf("manifest tenant: %+v (exported %v, snapshot %v)", mt, man.ExportedAt, man.SnapshotAt)
		}
		rows := map[string]int64{}
		for _, tb := range append(slices.Clone(man.Tables), man.Public...) {
			b, ok := files[tb.File]
			if !ok {
				t.Errorf("%s listed but not in the archive", tb.File)
				continue
			}
			recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
			if err != nil || int64(len(recs)-1) != tb.Rows || int64(len(b)) != tb.Bytes {
				t.Errorf("%s: %d records, %d bytes (err %v); manifest says %d rows, %d bytes", tb.File, len(recs)-1, len(b), err, tb.Rows, tb.Bytes)
			}
			rows[tb.File] = tb.Rows
		}
		want := map[string]int64{"tables/projects.csv": 2, "tables/tasks.csv": 3, "tables/milestones.csv": 1, "tables/expenses.csv": 1,
			"tables/documents.csv": 1, "tables/document_versions.csv": 2, "tables/document_uploads.csv": 0, "public/memberships.csv": 1}
		for f, n := range want {
			if got, ok := rows[f]; !ok || got != n {
				t.Errorf("%s: %d rows (listed %v), want %d", f, got, ok, n)
			}
		}
		for _, f := range []string{"tables/audit_log.csv", "public/casbin_rule.csv", "public/outbox.csv"} {
			if rows[f] == 0 {
				t.Errorf("%s: no rows", f)
			}
		}
		for _, f := range []string{"public/plugins.csv", "public/plugin_versions.csv"} {
			if _, ok := rows[f]; !ok {
				t.Errorf("%s not exported", f)
			}
		}
		if len(man.Warnings) != 0 || man.SkippedObjects != 0 {
			t.Errorf("warnings %v, skipped %d", man.Warnings, man.SkippedObjects)
		}
	})

	t.Run("OnlyThisTenant", func(t *testing.T) {
		ids := csvColumn(t, files["tables/projects.csv"], "id")
		slices.Sort(ids)
		want := []string{web, ops}
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("projects.csv ids %v, want %v", ids, want)
		}
		if names := csvColumn(t, files["tables/projects.csv"], "name"); !slices.Contains(names, `Website, "new"`) {
			t.Errorf("project names %q: CSV quoting lost", names)
		}
		for name, b := range files {
			if bytes.Contains(b, []byte(rivalProject)) || bytes.Contains(b, []byte("Rival secret")) {
				t.Errorf("%s holds the rival tenant's project", name)
			}
		}
		for _, tid := range csvColumn(t, files["public/outbox.csv"], "tenant_id") {
			if tid != tenantID {
				t.Errorf("outbox.csv has an event of tenant %s", tid)
			}
		}
		if emails := csvColumn(t, files["public/memberships.csv"], "user_email"); len(emails) != 1 || emails[0] != ownerU.Email {
			t.Errorf("memberships emails %v, want [%s]", emails, ownerU.Email)
		}
		v1s, v2s := csvColumn(t, files["public/casbin_rule.csv"], "v1"), csvColumn(t, files["public/casbin_rule.csv"], "v2")
		for i := range v1s {
			if v1s[i] != tenantID && v2s[i] != tenantID {
				t.Errorf("casbin rule %d is not in the tenant's domain: v1 %s v2 %s", i, v1s[i], v2s[i])
			}
		}
	})

	t.Run("Documents", func(t *testing.T) {
		if len(man.Documents) != 2 {
			t.Fatalf("documents in manifest: %+v", man.Documents)
		}
		for i, content := range [][]byte{v1, v2} {
			d := man.Documents[i]
			file := "documents/" + doc + "/v" + string(rune('1'+i))
			if d.File != file || d.DocumentID != doc || d.Version != i+1 || d.Size != int64(len(content)) || d.SHA256 != sha(content) {
				t.Errorf("manifest document %d: %+v, want %s of %d bytes, sha256 %s", i, d, file, len(content), sha(content))
			}
			if got := files[file]; sha(got) != d.SHA256 {
				t.Errorf("%s in the archive: sha256 %s, manifest %s", file, sha(got), d.SHA256)
			}
		}
	})

	t.Run("RefusesToOverwrite", func(t *testing.T) {
		before, _ := os.ReadFile(out)
		err := runCLIErr("tenant", "export", "-slug", slug, "-out", out, "-blob-url", blobURL)
		if err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("export over an existing file: %v", err)
		}
		if after, _ := os.ReadFile(out); !bytes.Equal(before, after) {
			t.Error("the existing archive was changed")
		}
	})

	t.Run("UnknownSlug", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.tar.gz")
		err := runCLIErr("tenant", "export", "-slug", "no-such-tenant", "-out", missing, "-blob-url", blobURL)
		if err == nil || !strings.Contains(err.Error(), `export tenant no-such-tenant: no tenant with this slug`) {
			t.Errorf("unknown slug: %v", err)
		}
		if entries, _ := filepath.Glob(filepath.Join(dir, "*missing*")); len(entries) != 0 {
			t.Errorf("a failed export left files: %v", entries)
		}
		if err := runCLIErr("tenant", "export", "-slug", slug); err == nil || !strings.Contains(err.Error(), "needs -slug and -out") {
			t.Errorf("export without -out: %v", err)
		}
	})

	t.Run("SuspendedAndDeleted", func(t *testing.T) {
		runCLI(t, "tenant", "suspend", "-slug", slug)
		suspended := filepath.Join(dir, "suspended.tar.gz")
		runCLI(t, "tenant", "export", "-slug", slug, "-out", suspended, "-blob-url", blobURL)
		if _, _, m := readExportFile(t, suspended); m.Tenant.State != "suspended" || len(m.Documents) != 2 {
			t.Errorf("suspended export: state %s, %d documents", m.Tenant.State, len(m.Documents))
		}
		runCLI(t, "tenant", "resume", "-slug", slug)
		eventuallyStatus(t, owner, 204, "DELETE", tp)

		// To standard output, for piping into an upload.
		var stdout, stderr bytes.Buffer
		m := NewMain(&stdout, &stderr)
		if err := m.Run(context.Background(), []string{"tenant", "export", "-slug", slug, "-out", "-", "-blob-url", blobURL,
			"-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(), "-log-level", "error"}); err != nil {
			t.Fatal(err)
		}
		files, _, m2 := readExport(t, &stdout)
		if m2.Tenant.State != "deleted" || m2.Tenant.DeletedAt == nil || m2.Tenant.PurgeAfter == nil {
			t.Errorf("deleted export: %+v", m2.Tenant)
		}
		if len(csvColumn(t, files["tables/projects.csv"], "id")) != 2 || len(m2.Documents) != 2 {
			t.Errorf("deleted tenant's export lost data: %d documents", len(m2.Documents))
		}
		if !strings.Contains(stderr.String(), "exported tenant "+slug) {
			t.Errorf("summary with -out -: stderr %q", stderr.String())
		}
	})
}
