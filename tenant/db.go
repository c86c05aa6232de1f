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
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// DBOptions tunes the connection pool. Zero values take the defaults; the
// session timeouts default to PostgreSQL's (none), so commands such as
// migrate that legitimately wait on locks keep doing so, while the API and
// the worker pass the operator's settings.
type DBOptions struct {
	MaxOpenConns    int
	ConnMaxLifetime time.Duration
	ConnMaxIdleTime time.Duration
	// AcquireTimeout bounds how long an operation waits for a pooled
	// connection (default 3s). Past it the operation fails with
	// ErrPoolTimeout, which the API answers with 503: a saturated pool sheds
	// load instead of queueing every request until its own deadline.
	AcquireTimeout time.Duration
	// StatementTimeout, LockTimeout and IdleInTransactionTimeout are set on
	// every session of the pool (statement_timeout, lock_timeout,
	// idle_in_transaction_session_timeout). Zero leaves the server's default.
	StatementTimeout         time.Duration
	LockTimeout              time.Duration
	IdleInTransactionTimeout time.Duration
}

// DefaultAcquireTimeout is how long an operation waits for a pooled
// connection when DBOptions.AcquireTimeout is not set.
const DefaultAcquireTimeout = 3 * time.Second

// ErrPoolTimeout means no pooled connection became free within the acquire
// timeout: the process is at its connection limit.
var ErrPoolTimeout = errors.New("no database connection became free in time")

// OpenDB opens the PostgreSQL pool used for everything.
//
// The pool is a pgxpool.Pool behind database/sql (for gorm): database/sql
// keeps no idle connections of its own and asks the pool for one per
// statement or transaction, with a bounded wait (AcquireTimeout), which
// database/sql alone cannot do (it waits until the caller's context ends).
// Every session carries the configured statement, lock and
// idle-in-transaction timeouts as startup parameters, so they hold for
// every tenant and nothing tenant-specific is SET on a session.
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
	o := DBOptions{MaxOpenConns: 20, ConnMaxLifetime: 30 * time.Minute, ConnMaxIdleTime: 5 * time.Minute, AcquireTimeout: DefaultAcquireTimeout}
	if opts != nil {
		if opts.MaxOpenConns > 0 {
			o.MaxOpenConns = opts.MaxOpenConns
		}
		if opts.ConnMaxLifetime > 0 {
			o.ConnMaxLifetime = opts.ConnMaxLifetime
		}
		if opts.ConnMaxIdleTime > 0 {
			o.ConnMaxIdleTime = opts.ConnMaxIdleTime
		}
		if opts.AcquireTimeout > 0 {
			o.AcquireTimeout = opts.AcquireTimeout
		}
		o.StatementTimeout, o.LockTimeout, o.IdleInTransactionTimeout = opts.StatementTimeout, opts.LockTimeout, opts.IdleInTransactionTimeout
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = int32(o.MaxOpenConns)
	cfg.MaxConnLifetime = o.ConnMaxLifetime
	cfg.MaxConnLifetimeJitter = o.ConnMaxLifetime / 10
	cfg.MaxConnIdleTime = o.ConnMaxIdleTime
	// A dead server must not hold an acquire longer than the acquire bound.
	cfg.PingTimeout = time.Second
	cc := cfg.ConnConfig
	cc.DefaultQueryExecMode = pgx.QueryExecModeExec
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > o.AcquireTimeout {
		cc.ConnectTimeout = o.AcquireTimeout
	}
	// Dates and timestamps are UTC whatever the server's default time zone.
	cc.RuntimeParams["timezone"] = "UTC"
	for name, d := range map[string]time.Duration{
		"statement_timeout":                   o.StatementTimeout,
		"lock_timeout":                        o.LockTimeout,
		"idle_in_transaction_session_timeout": o.IdleInTransactionTimeout,
	} {
		if d > 0 {
			cc.RuntimeParams[name] = strconv.FormatInt(d.Milliseconds(), 10)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	conn := &boundedConnector{Connector: stdlib.GetPoolConnector(pool), pool: pool, acquire: o.AcquireTimeout,
		tx: newTenantTxGate(max(1, o.MaxOpenConns/2))}
	sqlDB := sql.OpenDB(conn)
	// Idle connections live in the pool, not in database/sql: a connection
	// idle in database/sql would be invisible to a waiter in the pool.
	sqlDB.SetMaxIdleConns(0)

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

// boundedConnector hands database/sql a connection of the pool, waiting at
// most acquire for one (the caller's context may allow much longer: the
// work then runs under it, only the wait is bounded). Closing the sql.DB
// closes the pool.
type boundedConnector struct {
	driver.Connector
	pool     *pgxpool.Pool
	acquire  time.Duration
	timeouts atomic.Int64
	tx       *tenantTxGate
}

func (c *boundedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, c.acquire)
	defer cancel()
	conn, err := c.Connector.Connect(actx)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		c.timeouts.Add(1)
		return nil, fmt.Errorf("%w (waited %v, %d connections): %w", ErrPoolTimeout, c.acquire, c.pool.Config().MaxConns, err)
	}
	return conn, err
}

// Driver returns a driver that still knows its connector, for PoolStats.
func (c *boundedConnector) Driver() driver.Driver {
	return poolDriver{Driver: c.Connector.Driver(), c: c}
}

// Close closes the pool (database/sql calls it from DB.Close).
func (c *boundedConnector) Close() error {
	c.pool.Close()
	return nil
}

type poolDriver struct {
	driver.Driver
	c *boundedConnector
}

// connectorOf returns the connector of a handle opened by OpenDB (nil for
// any other handle, e.g. a transaction's).
func connectorOf(db *gorm.DB) *boundedConnector {
	sqlDB, ok := db.Statement.ConnPool.(*sql.DB)
	if !ok {
		return nil
	}
	d, ok := sqlDB.Driver().(poolDriver)
	if !ok {
		return nil
	}
	return d.c
}

// tenantTxGate lets each tenant hold at most share of the pool's
// connections in transactions at once; more of its transactions wait (no
// connection held) at most the acquire timeout. One tenant's burst of
// writes then cannot fill the pool and the queue for it, so other tenants'
// requests find a connection at once.
type tenantTxGate struct {
	share   int
	mu      sync.Mutex
	tenants map[uuid.UUID]*tenantTxSlots
}

type tenantTxSlots struct {
	ch   chan struct{}
	refs int
}

func newTenantTxGate(share int) *tenantTxGate {
	return &tenantTxGate{share: share, tenants: map[uuid.UUID]*tenantTxSlots{}}
}

func (g *tenantTxGate) enter(ctx context.Context, tenantID uuid.UUID, wait time.Duration) (release func(), err error) {
	g.mu.Lock()
	s := g.tenants[tenantID]
	if s == nil {
		s = &tenantTxSlots{ch: make(chan struct{}, g.share)}
		g.tenants[tenantID] = s
	}
	s.refs++
	g.mu.Unlock()
	drop := func() {
		g.mu.Lock()
		if s.refs--; s.refs == 0 {
			delete(g.tenants, tenantID)
		}
		g.mu.Unlock()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s.ch <- struct{}{}:
		return func() { <-s.ch; drop() }, nil
	case <-t.C:
		drop()
		return nil, fmt.Errorf("%w: the tenant already has %d transactions open (waited %v)", ErrPoolTimeout, g.share, wait)
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
}

// PoolStats describes the connection pool of a handle opened by OpenDB.
type PoolStats struct {
	MaxConns, TotalConns, AcquiredConns, IdleConns int32
	// AcquireCount counts connections handed out; EmptyAcquireCount those
	// that had to wait or dial; AcquireTimeouts waits that hit the bound.
	AcquireCount, EmptyAcquireCount, AcquireTimeouts int64
	// AcquireWait is the total time spent waiting for a connection.
	AcquireWait time.Duration
}

// Stats returns the pool statistics of db; ok is false for a handle that
// OpenDB did not open.
func Stats(db *gorm.DB) (PoolStats, bool) {
	sqlDB, err := db.DB()
	if err != nil {
		return PoolStats{}, false
	}
	d, ok := sqlDB.Driver().(poolDriver)
	if !ok {
		return PoolStats{}, false
	}
	s := d.c.pool.Stat()
	return PoolStats{MaxConns: s.MaxConns(), TotalConns: s.TotalConns(), AcquiredConns: s.AcquiredConns(), IdleConns: s.IdleConns(),
		AcquireCount: s.AcquireCount(), EmptyAcquireCount: s.EmptyAcquireCount(), AcquireTimeouts: d.c.timeouts.Load(),
		AcquireWait: s.EmptyAcquireWaitTime()}, true
}

// Ping checks that a connection can be acquired and answers, within ctx.
func Ping(ctx context.Context, db *gorm.DB) error {
	return SQLDB(db).PingContext(ctx)
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
