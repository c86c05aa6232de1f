package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gocloud.dev/blob"

	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// exportFormat names the archive layout; manifest.json carries it so that a
// reader can refuse a layout it does not know.
const exportFormat = "promanage-tenant-export/1"

// exportManifest is manifest.json, the last entry of the archive (it lists
// the blobs' sha256, known only once they were streamed).
type exportManifest struct {
	Format     string    `json:"format"`
	ExportedAt time.Time `json:"exported_at"`
	// SnapshotAt is when the database snapshot that every CSV comes from
	// was taken.
	SnapshotAt time.Time       `json:"snapshot_at"`
	Promanage  string          `json:"promanage_version"`
	Tenant     manifestTenant  `json:"tenant"`
	Tables     []manifestTable `json:"tables"`        // tables/<table>.csv, the tenant's schema
	Public     []manifestTable `json:"public_tables"` // public/<table>.csv, its rows of platform tables
	Documents  []manifestBlob  `json:"documents"`     // documents/<document-id>/v<n>
	// SkippedObjects counts objects under the tenant's prefix that no
	// document version of the snapshot names: uploads in flight or that
	// never committed (the worker collects them), versions stored after the
	// snapshot.
	SkippedObjects int      `json:"skipped_objects"`
	Warnings       []string `json:"warnings"`
}

type manifestTenant struct {
	ID            string          `json:"id"`
	Slug          string          `json:"slug"`
	Name          string          `json:"name"`
	State         string          `json:"state"`
	Schema        string          `json:"schema"`
	SchemaVersion int             `json:"schema_version"`
	Settings      json.RawMessage `json:"settings"`
	CreatedAt     time.Time       `json:"created_at"`
	DeletedAt     *time.Time      `json:"deleted_at"`
	PurgeAfter    *time.Time      `json:"purge_after"`
}

type manifestTable struct {
	Name    string   `json:"name"`
	File    string   `json:"file"`
	Rows    int64    `json:"rows"`
	Bytes   int64    `json:"bytes"`
	Columns []string `json:"columns,omitempty"`
}

type manifestBlob struct {
	File        string `json:"file"`
	DocumentID  string `json:"document_id"`
	Version     int    `json:"version"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"` // of the bytes in the archive
	ContentType string `json:"content_type"`
	Deleted     bool   `json:"document_deleted"`
}

// exportTenant is `promanage tenant export -slug acme -out acme.tar.gz`: a
// gzip'd tar of one tenant in any state (see tenant.Registry.Export for the
// database side). out "-" writes the archive to standard output. Otherwise
// the archive is written next to out under a temporary name and renamed at
// the end, so a failed or interrupted export never leaves a file that looks
// complete; an existing out is not overwritten.
func (m *Main) exportTenant(ctx context.Context, a *app, slug, out string) (err error) {
	if slug == "" || out == "" {
		return errors.New("tenant export needs -slug and -out (a .tar.gz path, or - for standard output)")
	}
	var (
		w       io.Writer = m.Stdout
		report            = m.Stdout
		tempDir string
		file    *os.File
	)
	if out == "-" {
		report = m.Stderr
	} else {
		if _, err := os.Lstat(out); err == nil {
			return fmt.Errorf("export tenant %s: %s exists: remove it or choose another -out", slug, out)
		}
		tempDir = filepath.Dir(out) // CSVs are spooled where the operator chose to have room
		// CreateTemp makes the file 0600: the archive holds personal data.
		if file, err = os.CreateTemp(tempDir, "."+filepath.Base(out)+".*.partial"); err != nil {
			return fmt.Errorf("export tenant %s: %w", slug, err)
		}
		defer func() {
			if err != nil {
				file.Close()
				os.Remove(file.Name())
			}
		}()
		w = file
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	gz := gzip.NewWriter(bw)
	tw := tar.NewWriter(gz)
	now := time.Now().UTC().Truncate(time.Second)
	man := exportManifest{Format: exportFormat, ExportedAt: now, Promanage: version, Warnings: []string{}, Documents: []manifestBlob{}}
	emit := func(ctx context.Context, path string, size int64, body io.Reader) error {
		return addTarEntry(tw, path, size, now, body)
	}
	opts := &tenant.ExportOptions{TempDir: tempDir, Documents: func(ctx context.Context, snap *tenant.ExportSnapshot) error {
		return exportBlobs(ctx, a.bucket, tw, snap, &man)
	}}
	reg, closeReg, err := a.sessionRegistry(ctx)
	if err != nil {
		return err
	}
	defer closeReg()
	snap, err := reg.Export(ctx, slug, opts, emit)
	if errors.Is(err, tenant.ErrNotFound) {
		return fmt.Errorf("export tenant %s: no tenant with this slug (see promanage tenant list)", slug)
	} else if err != nil {
		return err
	}

	t := snap.Tenant
	man.SnapshotAt = snap.SnapshotAt.UTC()
	man.Tenant = manifestTenant{ID: t.ID.String(), Slug: t.Slug, Name: t.Name, State: t.State, Schema: t.SchemaName,
		SchemaVersion: t.SchemaVersion, Settings: json.RawMessage(t.Settings), CreatedAt: t.CreatedAt.UTC(),
		DeletedAt: t.DeletedAt, PurgeAfter: t.PurgeAfter}
	var rows int64
	for _, tb := range snap.Tables {
		man.Tables = append(man.Tables, manifestTable{Name: tb.Name, File: tb.File, Rows: tb.Rows, Bytes: tb.Bytes, Columns: tb.Columns})
		rows += tb.Rows
	}
	for _, tb := range snap.Public {
		man.Public = append(man.Public, manifestTable{Name: tb.Name, File: tb.File, Rows: tb.Rows, Bytes: tb.Bytes})
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("export tenant %s: manifest: %w", slug, err)
	}
	mj = append(mj, '\n')
	if err := addTarEntry(tw, "manifest.json", int64(len(mj)), now, bytes.NewReader(mj)); err != nil {
		return fmt.Errorf("export tenant %s: %w", slug, err)
	}
	if err := closeAll(tw.Close, gz.Close, bw.Flush); err != nil {
		return fmt.Errorf("export tenant %s: write archive: %w", slug, err)
	}
	if file != nil {
		// Durable before it gets its final name.
		if err := closeAll(file.Sync, file.Close); err != nil {
			return fmt.Errorf("export tenant %s: write archive: %w", slug, err)
		}
		if err := os.Rename(file.Name(), out); err != nil {
			return fmt.Errorf("export tenant %s: %w", slug, err)
		}
	}

	var blobBytes int64
	for _, d := range man.Documents {
		blobBytes += d.Size
	}
	for _, w := range man.Warnings {
		fmt.Fprintf(m.Stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(report, "exported tenant %s (id %s, %s, schema version %d): %d tables, %d rows, %d document versions (%d bytes) to %s\n",
		t.Slug, t.ID, t.State, t.SchemaVersion, len(man.Tables), rows, len(man.Documents), blobBytes, out)
	return nil
}

// exportBlobs streams into tw the blob of every document version of the
// snapshot, found by listing the tenant's prefix (one listing instead of a
// request per version), hashing what it copies.
func exportBlobs(ctx context.Context, b *blob.Bucket, tw *tar.Writer, snap *tenant.ExportSnapshot, man *exportManifest) error {
	tid := snap.Tenant.ID
	want := make(map[string]int, len(snap.Documents)) // object key -> index in snap.Documents
	for i, d := range snap.Documents {
		want[storage.DocumentKey(tid, d.DocumentID, d.Version)] = i
	}
	found := make([]bool, len(snap.Documents))
	err := storage.ListPrefix(ctx, b, storage.TenantPrefix(tid), func(key string, _ int64, modTime time.Time) error {
		i, ok := want[key]
		if !ok {
			man.SkippedObjects++
			return nil
		}
		d := snap.Documents[i]
		mb := manifestBlob{File: "documents/" + d.DocumentID.String() + "/v" + strconv.Itoa(d.Version),
			DocumentID: d.DocumentID.String(), Version: d.Version, ContentType: d.ContentType, Deleted: d.Deleted}
		r, err := storage.Open(ctx, b, key, 0, -1)
		if errors.Is(err, storage.ErrNotFound) {
			return nil // deleted since the listing: reported as missing below
		} else if err != nil {
			return err
		}
		defer r.Close()
		found[i] = true
		mb.Size = r.Size()
		h := sha256.New()
		if err := addTarEntry(tw, mb.File, mb.Size, modTime.UTC(), io.TeeReader(r, h)); err != nil {
			return err
		}
		mb.SHA256 = hex.EncodeToString(h.Sum(nil))
		if mb.Size != d.Size || mb.SHA256 != d.SHA256 {
			man.Warnings = append(man.Warnings, fmt.Sprintf("document %s version %d: stored blob (%d bytes, sha256 %s) differs from its upload record (%d bytes, sha256 %s)",
				d.DocumentID, d.Version, mb.Size, mb.SHA256, d.Size, d.SHA256))
		}
		man.Documents = append(man.Documents, mb)
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy documents: %w", err)
	}
	for i, d := range snap.Documents {
		if found[i] {
			continue
		}
		why := "blob missing from the bucket"
		if d.Deleted {
			why = "blob already purged (the document is deleted)"
		}
		man.Warnings = append(man.Warnings, fmt.Sprintf("document %s version %d: %s; not in the archive", d.DocumentID, d.Version, why))
	}
	return nil
}

// addTarEntry writes one regular file of exactly size bytes.
func addTarEntry(tw *tar.Writer, name string, size int64, modTime time.Time, body io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: modTime}); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	n, err := io.Copy(tw, body)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s: copied %d bytes, expected %d", name, n, size)
	}
	return nil
}

// closeAll runs the steps in order and returns the first error.
func closeAll(steps ...func() error) error {
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// sessionRegistry is a registry whose connections are sessions of their
// own (the export holds a session-level advisory lock): the app's own when
// its pool reaches PostgreSQL directly, otherwise one on a small pool of
// PROMANAGE_DATABASE_DIRECT_URL with the app's settings.
func (a *app) sessionRegistry(ctx context.Context) (*tenant.Registry, func(), error) {
	u, err := a.cfg.sessionURL()
	if err != nil {
		return nil, nil, err
	}
	if u == a.cfg.DatabaseURL {
		return a.registry, func() {}, nil
	}
	o, err := a.cfg.dbOptions()
	if err != nil {
		return nil, nil, err
	}
	o.MaxOpenConns, o.Pooler = 2, tenant.PoolerNone
	db, err := tenant.OpenDB(ctx, u, o)
	if err != nil {
		return nil, nil, fmt.Errorf("open direct database connection: %w", err)
	}
	return tenant.NewRegistry(db, nil), func() { tenant.SQLDB(db).Close() }, nil
}
