package tenant

import (
	"bufio"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// ExportOptions configures Export.
type ExportOptions struct {
	// TempDir is where each CSV is spooled before it goes into the archive
	// (a tar entry needs its size up front). Default os.TempDir(); put it on
	// a disk with room for the largest table.
	TempDir string
	// Documents, if set, runs after the database snapshot was read and its
	// transaction ended, while the tenant's schema lock is still held, so the
	// tenant can be neither purged nor migrated meanwhile. The caller copies
	// the document blobs that snap.Documents lists there.
	Documents func(ctx context.Context, snap *ExportSnapshot) error
}

// ExportEmit receives one file of an export: its path inside the archive,
// its exact size and its contents (read it to the end before returning).
type ExportEmit func(ctx context.Context, path string, size int64, body io.Reader) error

// ExportSnapshot describes what Export read, all from one snapshot.
type ExportSnapshot struct {
	Tenant     Tenant
	SnapshotAt time.Time       // the database clock when the snapshot was taken
	Tables     []ExportedTable // the tenant schema's tables, by name
	Public     []ExportedTable // the tenant's rows of platform tables
	// Documents are the rows of document_versions in the snapshot: the blobs
	// an export must carry. Empty for a schema without documents.
	Documents []ExportedDocument
}

// ExportedTable is one CSV file of an export.
type ExportedTable struct {
	Name    string   // table name
	File    string   // path inside the archive
	Columns []string // the CSV header
	Rows    int64
	Bytes   int64
}

// ExportedDocument is one stored document version.
type ExportedDocument struct {
	DocumentID  uuid.UUID
	Version     int
	Size        int64
	SHA256      string // hex, as recorded at upload
	ContentType string
	Deleted     bool // the document is soft-deleted (its blobs may be purged any time)
}

// publicExports are the tenant's rows of the platform tables, by allowlist:
// a column added to one of these tables is not exported until it is named
// here, so a new secret can never leak by default. Plugin signing secrets
// and module bytes are left out on purpose. %[1]s is the tenant id as a SQL
// literal (COPY takes no parameters; the id is a parsed UUID from the
// registry, never client text).
var publicExports = []struct{ name, query string }{
	{"memberships", `SELECT m.tenant_id, m.user_id, u.email AS user_email, u.name AS user_name, m.role, m.created_at, m.updated_at
		FROM public.memberships m JOIN public.users u ON u.id = m.user_id
		WHERE m.tenant_id = %[1]s::uuid ORDER BY m.user_id`},
	{"casbin_rule", `SELECT id, ptype, v0, v1, v2, v3, v4, v5 FROM public.casbin_rule
		WHERE (ptype = 'p' AND v1 = %[1]s) OR (ptype = 'g' AND v2 = %[1]s) ORDER BY id`},
	{"plugins", `SELECT id, tenant_id, name, enabled, current_version, config, failure_policy, allowed_hosts,
		priority, timeout_ms, revision, created_by, created_at, updated_at
		FROM public.plugins WHERE tenant_id = %[1]s::uuid ORDER BY id`},
	{"plugin_versions", `SELECT id, plugin_id, tenant_id, version, hooks, manifest, size, sha256, created_by, created_at
		FROM public.plugin_versions WHERE tenant_id = %[1]s::uuid ORDER BY plugin_id, version`},
	{"outbox", `SELECT id, tenant_id, type, subject_id, actor_id, payload, dedupe_key, occurred_at
		FROM public.outbox WHERE tenant_id = %[1]s::uuid ORDER BY id`},
}

// plainName is what a table name must look like to become a file name.
var plainName = regexp.MustCompile(`^[A-Za-z0-9_]{1,63}$`)

// Export writes one tenant's data, in any state (active, suspended or
// soft-deleted), as CSV files to emit: tables/<table>.csv for every table of
// its schema (names from the catalog) and public/<table>.csv for its rows of
// the platform tables (memberships with the user's e-mail and name, casbin
// rules, plugin metadata, outbox events). It returns ErrNotFound for an
// unknown slug.
//
// Everything is read with COPY ... TO STDOUT inside ONE read-only REPEATABLE
// READ transaction, so all files are one consistent snapshot, and streamed to
// a temporary file (never held in memory) whose size then heads the archive
// entry. Before the snapshot, Export takes the tenant schema's advisory lock
// in shared mode (session-level, released at the end): a fleet migration or
// a purge of this tenant waits, and no DDL rewrite can empty a table under
// the snapshot. Other exports and normal traffic are not blocked.
//
// It runs on one connection taken from db's pool, through database/sql's
// Conn.Raw, so it inherits the pool's settings (UTC time zone, TLS) and uses
// no connection beyond the pool's bound. That connection must be a session
// of its own: a pool opened behind a transaction pooler is refused.
func (r *Registry) Export(ctx context.Context, slug string, opts *ExportOptions, emit ExportEmit) (*ExportSnapshot, error) {
	var o ExportOptions
	if opts != nil {
		o = *opts
	}
	if !SessionsPinned(r.db) {
		// The schema's lock is session-level: behind a transaction pooler
		// it would stay on whichever server connection took it, blocking
		// migrations of this tenant for as long as that connection lives.
		return nil, fmt.Errorf("export tenant %s: needs a direct database connection (PROMANAGE_DATABASE_DIRECT_URL), not one through a transaction pooler", slug)
	}
	var schema string
	err := r.db.WithContext(ctx).Raw("SELECT schema_name FROM public.tenants WHERE slug = ?", slug).Row().Scan(&schema)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("export tenant %s: %w", slug, err)
	}
	conn, err := SQLDB(r.db).Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("export tenant %s: %w", slug, err)
	}
	defer conn.Close()
	var snap *ExportSnapshot
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("export needs a pgx connection, got %T", dc)
		}
		snap, err = export(ctx, c.Conn(), slug, schema, o, emit)
		if c.Conn().IsClosed() {
			return errors.Join(err, driver.ErrBadConn) // never reused by the pool
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("export tenant %s: %w", slug, err)
	}
	return snap, nil
}

func export(ctx context.Context, conn *pgx.Conn, slug, schema string, o ExportOptions, emit ExportEmit) (snap *ExportSnapshot, err error) {
	// Session-level, so it is held before the snapshot is taken (a lock
	// taken by the transaction's first statement would come after it) and
	// after the transaction ended, while the documents are copied.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))", schema); err != nil {
		return nil, fmt.Errorf("lock schema: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))", schema); uerr != nil {
			// A connection that may still hold the lock must not go back to the pool.
			conn.Close(uctx)
			err = errors.Join(err, fmt.Errorf("unlock schema: %w", uerr))
		}
	}()

	snap, err = readSnapshot(ctx, conn, slug, schema, o, emit)
	if err != nil {
		return nil, err
	}
	if o.Documents != nil {
		if err := o.Documents(ctx, snap); err != nil {
			return nil, err
		}
	}
	return snap, nil
}

func readSnapshot(ctx context.Context, conn *pgx.Conn, slug, schema string, o ExportOptions, emit ExportEmit) (*ExportSnapshot, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // read-only: nothing to commit; a no-op after Commit
	}()
	// The export is one long transaction by design: the server's timeouts
	// for statements and idle transactions (the time an entry is written to
	// the archive) must not cut it. Transaction-local, like search_path.
	if _, err := tx.Exec(ctx, "SELECT set_config('statement_timeout', '0', true), set_config('idle_in_transaction_session_timeout', '0', true)"); err != nil {
		return nil, fmt.Errorf("set timeouts: %w", err)
	}
	snap := &ExportSnapshot{}
	t := &snap.Tenant
	err = tx.QueryRow(ctx, `SELECT now(), id, slug, name, state, schema_name, schema_version, settings::text,
		created_at, updated_at, deleted_at, purge_after FROM public.tenants WHERE slug = $1 AND schema_name = $2`, slug, schema).
		Scan(&snap.SnapshotAt, &t.ID, &t.Slug, &t.Name, &t.State, &t.SchemaName, &t.SchemaVersion, &t.Settings,
			&t.CreatedAt, &t.UpdatedAt, &t.DeletedAt, &t.PurgeAfter)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound // purged or renamed since the lookup
	} else if err != nil {
		return nil, fmt.Errorf("read tenant: %w", err)
	}
	x := &exporter{tx: tx, tempDir: o.TempDir, emit: emit}

	tables, err := x.tables(ctx, schema)
	if err != nil {
		return nil, err
	}
	hasVersions := false
	for _, tb := range tables {
		cols := make([]string, len(tb.columns))
		for i, c := range tb.columns {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		q := "SELECT " + strings.Join(cols, ", ") + " FROM " + pgx.Identifier{schema, tb.name}.Sanitize()
		if len(tb.key) > 0 {
			key := make([]string, len(tb.key))
			for i, c := range tb.key {
				key[i] = pgx.Identifier{c}.Sanitize()
			}
			q += " ORDER BY " + strings.Join(key, ", ")
		}
		et, err := x.copyOut(ctx, tb.name, "tables/"+tb.name+".csv", q)
		if err != nil {
			return nil, err
		}
		et.Columns = tb.columns
		snap.Tables = append(snap.Tables, et)
		hasVersions = hasVersions || tb.name == "document_versions"
	}
	tenantLit := "'" + t.ID.String() + "'" // canonical UUID text: hex digits and dashes only
	for _, p := range publicExports {
		et, err := x.copyOut(ctx, p.name, "public/"+p.name+".csv", fmt.Sprintf(p.query, tenantLit))
		if err != nil {
			return nil, err
		}
		snap.Public = append(snap.Public, et)
	}
	if hasVersions {
		if snap.Documents, err = documentVersions(ctx, tx, schema); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("end snapshot: %w", err)
	}
	return snap, nil
}

type exporter struct {
	tx      pgx.Tx
	tempDir string
	emit    ExportEmit
}

type catalogTable struct {
	name    string
	columns []string // stored columns in order; generated ones are left out
	key     []string // primary key, for a stable row order
}

// tables lists the ordinary and partitioned tables of schema (partitions are
// read through their parent), from the catalog of the snapshot.
func (x *exporter) tables(ctx context.Context, schema string) ([]catalogTable, error) {
	rows, err := x.tx.Query(ctx, `SELECT c.oid, c.relname FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname`, schema)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	type rel struct {
		oid  uint32
		name string
	}
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.oid, &r.name); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tables: %w", err)
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	if len(rels) == 0 {
		return nil, fmt.Errorf("schema %s has no tables (does it exist?)", schema)
	}
	out := make([]catalogTable, 0, len(rels))
	for _, r := range rels {
		if !plainName.MatchString(r.name) {
			return nil, fmt.Errorf("table name %q cannot be a file name", r.name)
		}
		tb := catalogTable{name: r.name}
		// Generated columns are computed again on import; a CSV with them
		// could not be loaded back with COPY ... FROM.
		if tb.columns, err = x.names(ctx, `SELECT attname FROM pg_catalog.pg_attribute
			WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, r.oid); err != nil {
			return nil, fmt.Errorf("columns of %s: %w", r.name, err)
		}
		if tb.key, err = x.names(ctx, `SELECT a.attname FROM pg_catalog.pg_index i
			CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, r.oid); err != nil {
			return nil, fmt.Errorf("primary key of %s: %w", r.name, err)
		}
		out = append(out, tb)
	}
	return out, nil
}

func (x *exporter) names(ctx context.Context, q string, oid uint32) ([]string, error) {
	rows, err := x.tx.Query(ctx, q, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// copyOut runs COPY (query) TO STDOUT as CSV with a header into a temporary
// file, then hands the file to emit.
func (x *exporter) copyOut(ctx context.Context, name, path, query string) (ExportedTable, error) {
	et := ExportedTable{Name: name, File: path}
	f, err := os.CreateTemp(x.tempDir, "promanage-export-*.csv")
	if err != nil {
		return et, fmt.Errorf("spool %s: %w", path, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	// COPY sends one message per row; buffering turns that into few writes.
	bw := bufio.NewWriterSize(f, 256<<10)
	tag, err := x.tx.Conn().PgConn().CopyTo(ctx, bw, "COPY ("+query+") TO STDOUT WITH (FORMAT csv, HEADER)")
	if err != nil {
		return et, fmt.Errorf("copy %s: %w", name, err)
	}
	if err := bw.Flush(); err != nil {
		return et, fmt.Errorf("spool %s: %w", path, err)
	}
	if et.Bytes, err = f.Seek(0, io.SeekCurrent); err != nil {
		return et, fmt.Errorf("spool %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return et, fmt.Errorf("spool %s: %w", path, err)
	}
	et.Rows = tag.RowsAffected()
	if err := x.emit(ctx, path, et.Bytes, f); err != nil {
		return et, fmt.Errorf("write %s: %w", path, err)
	}
	return et, nil
}

// documentVersions lists the stored versions in the snapshot. Contents are
// streamed later; this keeps about 100 bytes per version in memory, for the
// manifest.
func documentVersions(ctx context.Context, tx pgx.Tx, schema string) ([]ExportedDocument, error) {
	rows, err := tx.Query(ctx, `SELECT v.document_id, v.version, v.size, v.sha256, v.content_type, d.deleted_at IS NOT NULL
		FROM `+pgx.Identifier{schema, "document_versions"}.Sanitize()+` v
		LEFT JOIN `+pgx.Identifier{schema, "documents"}.Sanitize()+` d ON d.id = v.document_id
		ORDER BY v.document_id, v.version`)
	if err != nil {
		return nil, fmt.Errorf("list document versions: %w", err)
	}
	docs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ExportedDocument, error) {
		var d ExportedDocument
		err := row.Scan(&d.DocumentID, &d.Version, &d.Size, &d.SHA256, &d.ContentType, &d.Deleted)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("list document versions: %w", err)
	}
	return docs, nil
}
