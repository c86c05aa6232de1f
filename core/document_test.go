package core_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gocloud.dev/blob"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

func TestValidateMetadata(t *testing.T) {
	deep := strings.Repeat(`{"a":`, core.MaxMetadataDepth) + "1" + strings.Repeat("}", core.MaxMetadataDepth)
	manyKeys := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`"k%d":%d`, i, i)
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	cases := []struct {
		name, in, want string // want "" = invalid
	}{
		{"Empty", "", "{}"},
		{"Object", `{ "a" : [1, {"b": null}], "c": "d" }`, `{"a":[1,{"b":null}],"c":"d"}`},
		{"MaxDepth", deep, deep},
		{"TooDeep", `{"x":` + deep + "}", ""},
		{"ArrayDepthCounts", `{"a":[[[[[[[[1]]]]]]]]}`, ""},
		{"Array", `[1]`, ""},
		{"Null", `null`, ""},
		{"String", `"s"`, ""},
		{"TwoObjects", `{} {}`, ""},
		{"Truncated", `{"a":`, ""},
		{"EmptyKey", `{"":1}`, ""},
		{"LongKey", `{"` + strings.Repeat("k", core.MaxMetadataKeyBytes+1) + `":1}`, ""},
		{"ManyKeys", manyKeys(core.MaxMetadataKeys + 1), ""},
		{"TooBig", `{"a":"` + strings.Repeat("x", core.MaxMetadataBytes) + `"}`, ""},
		{"StringValuesAreNotKeys", `{"a":"b","c":["d","e"]}`, `{"a":"b","c":["d","e"]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := core.ValidateMetadata([]byte(tc.in))
			if tc.want == "" {
				if core.ErrorCode(err) != core.EINVALID {
					t.Fatalf("ValidateMetadata(%.60q) = %q, %v; want EINVALID", tc.in, got, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("ValidateMetadata(%.60q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCleanFilename(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":             "report.pdf",
		`C:\Users\x\secret.txt`:  "secret.txt",
		"../../etc/passwd":       "passwd",
		"a\x00b\r\nc\".txt":      "abc.txt",
		"..":                     "",
		strings.Repeat("é", 200): strings.Repeat("é", 127),
	} {
		if got := core.CleanFilename(in); got != want {
			t.Errorf("CleanFilename(%q) = %q, want %q", in, got, want)
		}
	}
}

// hookRecorder is a document.validate plugin runner that rejects uploads
// whose first bytes contain "EICAR" and records what it saw.
type hookRecorder struct {
	mu     sync.Mutex
	inputs []map[string]any
}

func (h *hookRecorder) RunValidation(_ context.Context, _ uuid.UUID, req core.ValidationRequest) (core.Verdict, error) {
	in, err := requestJSON(req)
	if err != nil {
		return core.Verdict{}, err
	}
	hook := string(req.Hook)
	h.mu.Lock()
	h.inputs = append(h.inputs, in)
	h.mu.Unlock()
	first, _ := base64.StdEncoding.DecodeString(in["input"].(map[string]any)["first_bytes_base64"].(string))
	if hook == "document.validate" && bytes.Contains(first, []byte("EICAR")) {
		return core.Verdict{Plugin: "antivirus", Message: "malware signature found"}, nil
	}
	return core.Verdict{Allowed: true}, nil
}

type docEnv struct {
	svc     *core.DocumentService
	sc      tenant.Scope
	project uuid.UUID
	bucket  *blob.Bucket
	actor   core.Actor
}

func newDocEnv(t *testing.T, hooks core.HookRunner) *docEnv {
	t.Helper()
	ctx := context.Background()
	db := testenv.DB(t)
	reg := tenant.NewRegistry(db, nil)
	tn, err := reg.Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("coredoc"), Name: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	actor := core.Actor{UserID: uuid.New()}
	p, err := (&core.ProjectService{DB: db}).Create(ctx, tn.Scope(), actor, core.ProjectInput{Key: "DOC", Name: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenBucket(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	svc := &core.DocumentService{DB: db, Bucket: b, Registry: reg, Hooks: core.ValidationHooks{Runner: hooks},
		Defaults: tenant.StorageSettings{QuotaBytes: 1 << 30, MaxFileBytes: 1 << 20}}
	return &docEnv{svc: svc, sc: tn.Scope(), project: p.ID, bucket: b, actor: actor}
}

func (e *docEnv) keys(t *testing.T) []string {
	t.Helper()
	var keys []string
	if err := storage.ListPrefix(context.Background(), e.bucket, storage.TenantPrefix(e.sc.ID), func(k string, _ int64, _ time.Time) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func upload(body string) core.Upload {
	return core.Upload{Filename: "f.txt", Body: strings.NewReader(body), DeclaredBytes: int64(len(body))}
}

// A document.validate rejection answers plugin_rejected before any byte is
// written: no document, no version number taken, no blob, no quota used.
func TestDocumentValidateHook(t *testing.T) {
	hooks := &hookRecorder{}
	e := newDocEnv(t, hooks)
	ctx := context.Background()
	in := upload("X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
	in.Title, in.Metadata = "suspicious", `{"from":"mail"}`
	_, err := e.svc.Create(ctx, e.sc, e.actor, e.project, in)
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Code != core.EPLUGINREJECTED || ce.Plugin != "antivirus" {
		t.Fatalf("Create = %v, want plugin_rejected by antivirus", err)
	}
	seen := hooks.inputs[0]
	input := seen["input"].(map[string]any)
	if seen["hook"] != "document.validate" || seen["operation"] != "create" || input["title"] != "suspicious" ||
		input["metadata"].(map[string]any)["from"] != "mail" || input["content_type"] != "text/plain; charset=utf-8" || input["size"] != 68.0 {
		t.Fatalf("hook input: %v", seen)
	}
	if keys := e.keys(t); len(keys) != 0 {
		t.Fatalf("rejected upload left blobs: %v", keys)
	}
	if used, _ := e.svc.Usage(ctx, e.sc); used != 0 {
		t.Fatalf("rejected upload holds %d bytes of quota", used)
	}
	page, err := e.svc.List(ctx, e.sc, e.project, 0, "")
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("documents after rejection: %v %v", page, err)
	}

	// A clean document; then a rejected new version takes no number.
	doc, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("clean"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddVersion(ctx, e.sc, e.actor, doc.ID, upload("EICAR again")); core.ErrorCode(err) != core.EPLUGINREJECTED {
		t.Fatalf("AddVersion = %v", err)
	}
	v2, err := e.svc.AddVersion(ctx, e.sc, e.actor, doc.ID, upload("clean v2"))
	if err != nil || v2.Version != 2 {
		t.Fatalf("AddVersion after a rejection = %v, %v; want version 2", v2, err)
	}
	// The hook sees the first 4 KiB of a large upload, and no size.
	big := strings.Repeat("a", 10000)
	if _, err := e.svc.AddVersion(ctx, e.sc, e.actor, doc.ID, upload(big)); err != nil {
		t.Fatal(err)
	}
	last := hooks.inputs[len(hooks.inputs)-1]["input"].(map[string]any)
	first, _ := base64.StdEncoding.DecodeString(last["first_bytes_base64"].(string))
	if len(first) != core.HookFirstBytes || last["size"] != nil {
		t.Fatalf("hook saw %d first bytes, size %v", len(first), last["size"])
	}
}

// Concurrent new versions of one document get distinct, consecutive
// numbers, and each version's bytes are the ones uploaded under it.
func TestConcurrentVersions(t *testing.T) {
	e := newDocEnv(t, nil)
	ctx := context.Background()
	doc, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("v1"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	bodies := map[int]string{}
	for i := range n {
		wg.Go(func() {
			body := "version body " + strings.Repeat("x", i)
			d, err := e.svc.AddVersion(ctx, e.sc, e.actor, doc.ID, upload(body))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if _, dup := bodies[d.Version]; dup {
				t.Errorf("version %d given twice", d.Version)
			}
			bodies[d.Version] = body
		})
	}
	wg.Wait()
	for v := 2; v <= n+1; v++ {
		want, ok := bodies[v]
		if !ok {
			t.Fatalf("version %d missing: %v", v, bodies)
		}
		ver, err := e.svc.Version(ctx, e.sc, doc.ID, v)
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.svc.Open(ctx, e.sc.ID, ver, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(r)
		r.Close()
		if buf.String() != want {
			t.Fatalf("version %d holds %q, want %q", v, buf.String(), want)
		}
	}
	if cur, _ := e.svc.Get(ctx, e.sc, doc.ID); cur.Version != n+1 {
		t.Fatalf("current version %d, want %d", cur.Version, n+1)
	}
}

// The collector purges deleted documents after their grace, removes
// crashed uploads' reservations and blobs, and orphan blobs, and keeps
// everything that is accounted for.
func TestCollect(t *testing.T) {
	e := newDocEnv(t, nil)
	e.svc.DeleteGrace = time.Millisecond
	ctx := context.Background()
	keep, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("keep me"))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("delete me"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddVersion(ctx, e.sc, e.actor, gone.ID, upload("delete me too")); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, e.sc, e.actor, gone.ID); err != nil {
		t.Fatal(err)
	}
	// An orphan (a commit that failed after the blob was stored) and a
	// crashed upload's reservation with its blob.
	orphan := storage.DocumentKey(e.sc.ID, keep.ID, 7)
	crashed := storage.DocumentKey(e.sc.ID, keep.ID, 2)
	for _, k := range []string{orphan, crashed} {
		if _, err := storage.Put(ctx, e.bucket, k, strings.NewReader("stray"), nil); err != nil {
			t.Fatal(err)
		}
	}
	db := testenv.DB(t)
	if err := db.Exec("UPDATE "+e.sc.Table("documents")+" SET next_version = 3 WHERE id = ?", keep.ID).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO "+e.sc.Table("document_uploads")+" (document_id, version, reserved_bytes, created_by, expires_at) VALUES (?, 2, 100, ?, now() - interval '1 minute')",
		keep.ID, e.actor.UserID).Error; err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)

	// Young objects are spared.
	if st, err := e.svc.Collect(ctx, e.sc, time.Hour); err != nil || st != (core.GCStats{PurgedDocuments: 1, ExpiredReservations: 1}) {
		t.Fatalf("Collect(minAge 1h) = %+v, %v: want the deleted document and the crashed upload, young orphans spared", st, err)
	}
	if !contains(e.keys(t), orphan) {
		t.Fatal("a young orphan was deleted")
	}
	st, err := e.svc.Collect(ctx, e.sc, -time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st != (core.GCStats{OrphanBlobs: 1}) {
		t.Fatalf("second Collect = %+v, want the one orphan", st)
	}
	keys := e.keys(t)
	if len(keys) != 1 || keys[0] != storage.DocumentKey(e.sc.ID, keep.ID, 1) {
		t.Fatalf("after collection the bucket holds %v, want only keep/v1", keys)
	}
	var rows int64
	db.Raw("SELECT count(*) FROM "+e.sc.Table("documents")+" WHERE id = ?", gone.ID).Scan(&rows)
	if rows != 0 {
		t.Fatal("purged document's row remains")
	}
	// The crashed upload's number is free again.
	v, err := e.svc.AddVersion(ctx, e.sc, e.actor, keep.ID, upload("v2"))
	if err != nil || v.Version != 2 {
		t.Fatalf("AddVersion after collection = %v, %v; want version 2", v, err)
	}
	if used, _ := e.svc.Usage(ctx, e.sc); used != int64(len("keep me")+len("v2")) {
		t.Fatalf("usage %d", used)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Deleting a project deletes its documents: they are no longer reachable by
// their own ids, and their blobs become the collector's.
func TestDeletingProjectDeletesItsDocuments(t *testing.T) {
	e := newDocEnv(t, nil)
	ctx := context.Background()
	doc, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("kept with the project"))
	if err != nil {
		t.Fatal(err)
	}
	if err := (&core.ProjectService{DB: e.svc.DB}).Delete(ctx, e.sc, e.actor, e.project); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, e.sc, doc.ID); core.ErrorCode(err) != core.ENOTFOUND {
		t.Fatalf("document of a deleted project: %v, want not_found", err)
	}
	var purgeAfter *time.Time
	if err := e.svc.DB.Raw("SELECT purge_after FROM "+e.sc.Table("documents")+" WHERE id = ?", doc.ID).Scan(&purgeAfter).Error; err != nil {
		t.Fatal(err)
	}
	if purgeAfter == nil || purgeAfter.Before(time.Now().Add(6*24*time.Hour)) {
		t.Fatalf("purge_after = %v, want about 7 days from now", purgeAfter)
	}
}

// A document whose upload commits while its project is being deleted goes
// with the project: the deletion waits for the upload's transaction, whose
// document its cascade then sees.
func TestDocumentCreatedDuringProjectDeletionIsDeleted(t *testing.T) {
	e := newDocEnv(t, nil)
	ctx := context.Background()
	db := e.svc.DB
	// Holds the upload's transaction between its check of the project and
	// its commit (it inserts the version row after the check).
	hold := db.Begin()
	defer hold.Rollback()
	if err := hold.Exec("LOCK TABLE " + e.sc.Table("document_versions") + " IN EXCLUSIVE MODE").Error; err != nil {
		t.Fatal(err)
	}
	waiting := func(like string) bool {
		var n int64
		if err := db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE ?`, like).Scan(&n).Error; err != nil {
			t.Error(err)
		}
		return n > 0
	}
	type created struct {
		doc *core.Document
		err error
	}
	cdone := make(chan created, 1)
	go func() {
		d, err := e.svc.Create(ctx, e.sc, e.actor, e.project, upload("uploaded while the project goes"))
		cdone <- created{d, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); !waiting("%document_versions%"); {
		if time.Now().After(deadline) {
			t.Fatal("the upload never reached its version insert")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ddone := make(chan error, 1)
	go func() { ddone <- (&core.ProjectService{DB: db}).Delete(ctx, e.sc, e.actor, e.project) }()
	// The deletion either finishes now (it cannot see the upload) or waits
	// for the upload's transaction.
	select {
	case err := <-ddone:
		ddone <- err
	case <-time.After(500 * time.Millisecond):
	}
	if err := hold.Commit().Error; err != nil {
		t.Fatal(err)
	}
	c := <-cdone
	if err := <-ddone; err != nil {
		t.Fatal(err)
	}
	if c.err != nil {
		if core.ErrorCode(c.err) == core.ENOTFOUND {
			return // refused: as good as deleted
		}
		t.Fatal(c.err)
	}
	if _, err := e.svc.Get(ctx, e.sc, c.doc.ID); core.ErrorCode(err) != core.ENOTFOUND {
		t.Fatalf("document uploaded during its project's deletion: %v, want not_found", err)
	}
}
