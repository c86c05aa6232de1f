package tenant

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"
)

//go:embed migrations/public/*.sql migrations/tenant/*.sql
var migrationFiles embed.FS

// Migration is one versioned SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// PublicMigrations returns the embedded migrations of the public schema.
func PublicMigrations() []Migration { return mustLoad("migrations/public") }

// TenantMigrations returns the embedded migrations of every tenant schema.
func TenantMigrations() []Migration { return mustLoad("migrations/tenant") }

func mustLoad(dir string) []Migration {
	ms, err := loadMigrations(migrationFiles, dir)
	if err != nil {
		panic(err) // embedded files are checked by tests; a bad name is a build defect
	}
	return ms
}

func loadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %s: versions must be 1..n without gaps", m.Name)
		}
	}
	return out, nil
}

// publicLockKey serialises public-schema migrations across replicas.
const publicLockKey = 7_000_001

// MigratePublic brings the public schema up to date. It is safe to run from
// several processes at once.
func MigratePublic(ctx context.Context, db *gorm.DB) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := liftTimeouts(tx); err != nil {
			return fmt.Errorf("migrate public: %w", err)
		}
		if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", publicLockKey).Error; err != nil {
			return fmt.Errorf("migrate public: lock: %w", err)
		}
		if err := tx.Exec(`CREATE TABLE IF NOT EXISTS public.schema_migrations (
			version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`).Error; err != nil {
			return fmt.Errorf("migrate public: %w", err)
		}
		var current int
		if err := tx.Raw("SELECT coalesce(max(version), 0) FROM public.schema_migrations").Scan(&current).Error; err != nil {
			return fmt.Errorf("migrate public: %w", err)
		}
		if err := setSearchPath(tx, "public"); err != nil {
			return err
		}
		for _, m := range PublicMigrations() {
			if m.Version <= current {
				continue
			}
			if err := tx.Exec(m.SQL).Error; err != nil {
				return fmt.Errorf("migrate public %s: %w", m.Name, err)
			}
			if err := tx.Exec("INSERT INTO public.schema_migrations (version, name) VALUES (?, ?)", m.Version, m.Name).Error; err != nil {
				return fmt.Errorf("migrate public %s: %w", m.Name, err)
			}
		}
		return nil
	})
}

// liftTimeouts lets a migration transaction wait as long as it must (for
// another replica's lock on the schema, for the rewrite of a large table).
// The migrate command opens its pool without session timeouts, but behind a
// transaction pooler the server's sessions carry the role's, which are the
// API's (docs/SCALING.md); lifting them transaction-locally keeps
// migrations the same on every path, at one round trip per transaction.
func liftTimeouts(tx *gorm.DB) error {
	err := tx.Exec(`SELECT set_config('statement_timeout', '0', true), set_config('lock_timeout', '0', true),
		set_config('idle_in_transaction_session_timeout', '0', true)`).Error
	if err != nil {
		return fmt.Errorf("lift timeouts: %w", err)
	}
	return nil
}

// applyTenantMigrations runs the migrations above from (up to target) inside
// tx, which already holds the tenant's advisory lock. The schema must exist:
// PostgreSQL skips a missing schema of search_path, so the migrations would
// otherwise create the tenant's tables in public.
func applyTenantMigrations(tx *gorm.DB, schema string, ms []Migration, from, target int) error {
	var n int64
	if err := tx.Raw("SELECT count(*) FROM pg_namespace WHERE nspname = ?", schema).Scan(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("schema %s does not exist", schema)
	}
	if err := setSearchPath(tx, schema); err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version <= from || m.Version > target {
			continue
		}
		if err := tx.Exec(m.SQL).Error; err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return nil
}

// MigrateOptions tunes a fleet migration.
type MigrateOptions struct {
	// Parallel bounds how many tenant schemas migrate at once (default 4).
	Parallel int
	// Target is the version to reach (default: the latest embedded one).
	Target int
	// Progress, if set, is called after each tenant (from several goroutines,
	// serialised by the caller of Progress: calls never overlap).
	Progress func(done, total int, slug string, err error)
}

// MigrateReport tells what a fleet migration did.
type MigrateReport struct {
	Target   int
	Pending  int               // tenants behind Target when the run started
	Migrated int               // tenants brought to Target by this run
	Failures map[string]string // slug -> error, for tenants left behind
	Versions map[int]int       // schema version -> number of tenants, after the run
	Elapsed  time.Duration
}

// Migrate brings every live tenant schema to the target version. With nothing
// to do it costs one query. Each tenant migrates in its own transaction under
// an advisory lock on its schema, so several replicas may run it at once and
// an interrupted run resumes where it stopped; one tenant's failure does not
// stop the others and is reported per tenant.
func (r *Registry) Migrate(ctx context.Context, opts *MigrateOptions) (*MigrateReport, error) {
	start := time.Now()
	o := MigrateOptions{Parallel: 4}
	if opts != nil {
		o = *opts
		if o.Parallel <= 0 {
			o.Parallel = 4
		}
	}
	if o.Target <= 0 {
		o.Target = len(r.migrations)
	}
	rep := &MigrateReport{Target: o.Target, Failures: map[string]string{}}

	var behind []Tenant
	err := r.db.WithContext(ctx).Table("public.tenants").
		Where("schema_version < ? AND state IN ('active','suspended')", o.Target).
		Order("id").Find(&behind).Error
	if err != nil {
		return nil, fmt.Errorf("migrate tenants: list: %w", err)
	}
	rep.Pending = len(behind)

	var mu sync.Mutex
	done := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Parallel)
	for _, t := range behind {
		g.Go(func() error {
			err := r.migrateOne(gctx, t.ID, o.Target)
			mu.Lock()
			defer mu.Unlock()
			done++
			if errors.Is(err, errTenantGone) {
				err = nil // deleted since it was listed: nothing to migrate
			} else if err != nil {
				rep.Failures[t.Slug] = err.Error()
			} else {
				rep.Migrated++
			}
			if o.Progress != nil {
				o.Progress(done, len(behind), t.Slug, err)
			}
			return nil // one tenant's failure must not cancel the others
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("migrate tenants: %w", err)
	}
	if len(behind) > 0 {
		rep.Versions, err = r.VersionCounts(ctx)
		if err != nil {
			return rep, err
		}
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// migrateOne migrates one tenant to target in one transaction.
func (r *Registry) migrateOne(ctx context.Context, id uuid.UUID, target int) error {
	schema := SchemaName(id)
	return r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := liftTimeouts(tx); err != nil {
			return err
		}
		if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", schema).Error; err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		var versions []int
		// Re-read under the lock: another replica may have done the work,
		// or the tenant may have been deleted and purged since it was listed.
		if err := tx.Raw("SELECT schema_version FROM public.tenants WHERE id = ? AND state IN ('active','suspended')", id).Scan(&versions).Error; err != nil {
			return err
		}
		if len(versions) == 0 {
			return errTenantGone
		}
		current := versions[0]
		if current >= target {
			return nil
		}
		if err := applyTenantMigrations(tx, schema, r.migrations, current, target); err != nil {
			return err
		}
		return tx.Exec("UPDATE public.tenants SET schema_version = ?, updated_at = now() WHERE id = ?", target, id).Error
	})
}

// VersionCounts reports how many live tenants are at each schema version.
func (r *Registry) VersionCounts(ctx context.Context) (map[int]int, error) {
	var rows []struct {
		SchemaVersion int
		N             int
	}
	err := r.db.WithContext(ctx).Raw(`SELECT schema_version, count(*) AS n FROM public.tenants
		WHERE state IN ('active','suspended') GROUP BY schema_version`).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("tenant versions: %w", err)
	}
	out := make(map[int]int, len(rows))
	for _, r := range rows {
		out[r.SchemaVersion] = r.N
	}
	return out, nil
}

// errTenantGone: the tenant was deleted after the fleet migration listed it.
var errTenantGone = errors.New("tenant deleted meanwhile")

// ErrMigrationsMissing is returned when the database is newer than the binary.
var ErrMigrationsMissing = errors.New("database schema is newer than this binary")
