// Package tenant owns the platform side of multi-tenancy: the registry of
// tenants in the public schema, provisioning of one PostgreSQL schema per
// tenant, the embedded versioned SQL migrations (public and per tenant), the
// fleet migration, and tenant-scoped database access.
//
// It must never issue a session-level SET (pooled connections would carry it
// to the next tenant), never derive a schema name from a slug, and never run a
// tenant query whose tables are not qualified by the tenant's schema or whose
// transaction did not set search_path transaction-locally.
package tenant

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// DBOptions tunes the connection pool. Zero values take the defaults.
type DBOptions struct {
	MaxOpenConns    int
	MaxIdleConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
}

// OpenDB opens the PostgreSQL pool used for everything.
//
// Statements run in pgx's QueryExecModeExec: the extended protocol with an
// unnamed statement and no client-side statement or description cache. Each
// query is still one round trip, and since nothing is cached a tenant schema
// that is mid-migration (a column added in one schema but not yet in another)
// can never produce "cached plan must not change result type".
//
// Connections get a bounded lifetime and idle time because every backend
// caches the catalog entries of each tenant schema it touches.
func OpenDB(ctx context.Context, url string, opts *DBOptions) (*gorm.DB, error) {
	o := DBOptions{MaxOpenConns: 20, MaxIdleConns: 10, ConnMaxLifetime: 30 * time.Minute, ConnMaxIdleTime: 5 * time.Minute}
	if opts != nil {
		if opts.MaxOpenConns > 0 {
			o.MaxOpenConns = opts.MaxOpenConns
		}
		if opts.MaxIdleConns > 0 {
			o.MaxIdleConns = opts.MaxIdleConns
		}
		if opts.ConnMaxLifetime > 0 {
			o.ConnMaxLifetime = opts.ConnMaxLifetime
		}
		if opts.ConnMaxIdleTime > 0 {
			o.ConnMaxIdleTime = opts.ConnMaxIdleTime
		}
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	// Dates and timestamps are UTC whatever the server's default time zone.
	cfg.RuntimeParams["timezone"] = "UTC"
	sqlDB := stdlib.OpenDB(*cfg)
	sqlDB.SetMaxOpenConns(o.MaxOpenConns)
	sqlDB.SetMaxIdleConns(min(o.MaxIdleConns, o.MaxOpenConns))
	sqlDB.SetConnMaxLifetime(o.ConnMaxLifetime)
	sqlDB.SetConnMaxIdleTime(o.ConnMaxIdleTime)

	db, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{
		SkipDefaultTransaction: true,
		Logger:                 gormLogger{},
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return db, nil
}

// SQLDB returns the *sql.DB under a gorm handle.
func SQLDB(db *gorm.DB) *sql.DB {
	s, err := db.DB()
	if err != nil {
		panic(err) // only fails for a gorm handle without a connection pool
	}
	return s
}

// gormLogger sends gorm's slow-query and error reports to slog, never the
// statement's arguments (they may carry personal data).
type gormLogger struct{}

func (gormLogger) LogMode(logger.LogLevel) logger.Interface { return gormLogger{} }
func (gormLogger) Info(context.Context, string, ...any)     {}
func (gormLogger) Warn(context.Context, string, ...any)     {}
func (gormLogger) Error(context.Context, string, ...any)    {}
func (gormLogger) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	if d := time.Since(begin); d > 500*time.Millisecond {
		sql, _ := fc()
		slog.WarnContext(ctx, "slow query", "duration_ms", d.Milliseconds(), "sql", truncate(sql, 200))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
