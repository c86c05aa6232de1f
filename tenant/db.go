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
	"strings"
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
	// idle_in_transaction_session_timeout) as startup parameters, or, behind
	// a transaction pooler, must already be the server's (OpenDB checks
	// both). Zero leaves the server's default.
	StatementTimeout         time.Duration
	LockTimeout              time.Duration
	IdleInTransactionTimeout time.Duration
	// StatementMode is how statements are sent (pgx's QueryExecMode; zero:
	// QueryExecModeExec). ParseStatementMode reads the setting's names.
	StatementMode pgx.QueryExecMode
	// Pooler is what sits between the pool and PostgreSQL (zero: nothing,
	// or a session-pooling pooler).
	Pooler Pooler
}

// Pooler says whether connections reach PostgreSQL through a
// transaction-pooling pooler, which hands each transaction (and each
// statement outside one) whichever server connection is free.
type Pooler string

const (
	// PoolerNone: every connection is a PostgreSQL session of its own
	// (directly, or through a session-pooling pooler).
	PoolerNone Pooler = ""
	// PoolerTransaction: a transaction-pooling pooler such as PgBouncer
	// with pool_mode=transaction. Nothing may rely on a session: the
	// session timeouts come from the server (the role's settings or the
	// pooler's connect_query) and are checked, not sent; only statement
	// modes that keep every statement self-contained are allowed; LISTEN
	// and session advisory locks need a direct connection.
	PoolerTransaction Pooler = "transaction"
)

// ParsePooler reads PROMANAGE_DB_POOLER: "none" (or empty) or "transaction".
func ParsePooler(s string) (Pooler, error) {
	switch s {
	case "", "none":
		return PoolerNone, nil
	case "transaction":
		return PoolerTransaction, nil
	}
	return "", fmt.Errorf("database pooler %q: want none or transaction", s)
}

// statementModes are pgx's query exec modes by the names its connection
// strings use (default_query_exec_mode).
var statementModes = map[string]pgx.QueryExecMode{
	"cache_statement": pgx.QueryExecModeCacheStatement,
	"cache_describe":  pgx.QueryExecModeCacheDescribe,
	"describe_exec":   pgx.QueryExecModeDescribeExec,
	"exec":            pgx.QueryExecModeExec,
	"simple_protocol": pgx.QueryExecModeSimpleProtocol,
}

// ParseStatementMode reads PROMANAGE_DB_STATEMENT_MODE: cache_statement,
// cache_describe, describe_exec, exec or simple_protocol (pgx's names).
func ParseStatementMode(s string) (pgx.QueryExecMode, error) {
	if m, ok := statementModes[s]; ok {
		return m, nil
	}
	return 0, fmt.Errorf("database statement mode %q: want cache_statement, cache_describe, describe_exec, exec or simple_protocol", s)
}

// checkPooledMode refuses the statement modes that a transaction-pooling
// pooler breaks. cache_statement prepares named statements on the server
// connection the pooler happened to give, and a later statement runs on
// another one where the name does not exist (PgBouncer before 1.21, or
// without max_prepared_statements). describe_exec sends the unnamed
// statement in one round trip and executes it in a second one: between
// the two the pooler may hand the server connection to another client,
// so the Bind may meet another client's unnamed statement, an error at
// best and someone else's query at worst. exec, simple_protocol and
// cache_describe send each statement whole in one round trip.
func checkPooledMode(mode pgx.QueryExecMode) error {
	switch mode {
	case pgx.QueryExecModeCacheStatement:
		return fmt.Errorf("statement mode cache_statement does not work behind a transaction pooler (named prepared statements live on one server connection): use exec, simple_protocol or cache_describe")
	case pgx.QueryExecModeDescribeExec:
		return fmt.Errorf("statement mode describe_exec is unsafe behind a transaction pooler (its second round trip may reach another client's server connection): use exec, simple_protocol or cache_describe")
	}
	return nil
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
// Statements run in opts.StatementMode, by default pgx's QueryExecModeExec:
// the extended protocol with an unnamed statement and no client-side
// statement or description cache. Each query is still one round trip, and
// since nothing is cached a tenant schema that is mid-migration (a column
// added in one schema but not yet in another) can never produce "cached plan
// must not change result type". Behind a transaction pooler
// (PoolerTransaction) the modes it breaks are refused (checkPooledMode) and
// the session timeouts are not sent: PgBouncer refuses unknown startup
// parameters, or drops them silently when told to ignore them. Either way
// the timeouts and time zone the server's sessions really have are read
// back once the pool is open, and a difference is an error: the process
// never runs without the bounds it was configured with.
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
		o.StatementMode, o.Pooler = opts.StatementMode, opts.Pooler
	}
	if o.StatementMode == 0 {
		o.StatementMode = pgx.QueryExecModeExec
	}
	if o.StatementMode < pgx.QueryExecModeCacheStatement || o.StatementMode > pgx.QueryExecModeSimpleProtocol {
		return nil, fmt.Errorf("open database: invalid statement mode %d", o.StatementMode)
	}
	if o.Pooler == PoolerTransaction {
		if err := checkPooledMode(o.StatementMode); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
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
	cc.DefaultQueryExecMode = o.StatementMode
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > o.AcquireTimeout {
		cc.ConnectTimeout = o.AcquireTimeout
	}
	// Dates and timestamps are UTC whatever the server's default time zone
	// (PgBouncer tracks TimeZone per client, so this holds behind it too).
	cc.RuntimeParams["timezone"] = "UTC"
	timeouts := sessionTimeouts(o)
	if o.Pooler != PoolerTransaction {
		for name, d := range timeouts {
			if d > 0 {
				cc.RuntimeParams[name] = strconv.FormatInt(d.Milliseconds(), 10)
			}
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	conn := &boundedConnector{Connector: stdlib.GetPoolConnector(pool), pool: pool, acquire: o.AcquireTimeout,
		tx: newTenantTxGate(max(1, o.MaxOpenConns/2)), pooler: o.Pooler}
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
		return nil, fmt.Errorf("open database: %w", poolerHint(err))
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("ping database: %w", poolerHint(err))
	}
	if err := checkSessionSettings(pingCtx, sqlDB, timeouts); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	return db, nil
}

// poolerHint explains PgBouncer's refusal of the session timeouts.
func poolerHint(err error) error {
	if strings.Contains(err.Error(), "unsupported startup parameter") {
		return fmt.Errorf("%w (a transaction pooler such as PgBouncer refuses the session timeouts as startup parameters: set PROMANAGE_DB_POOLER=transaction and give the role the timeouts, docs/SCALING.md)", err)
	}
	return err
}

// sessionTimeouts are the session settings of the pool, by name.
func sessionTimeouts(o DBOptions) map[string]time.Duration {
	return map[string]time.Duration{
		"statement_timeout":                   o.StatementTimeout,
		"lock_timeout":                        o.LockTimeout,
		"idle_in_transaction_session_timeout": o.IdleInTransactionTimeout,
	}
}

// checkSessionSettings reads back the time zone and the timeouts a session
// of the pool really has. Sent as startup parameters they always match,
// unless a pooler dropped them (PgBouncer's ignore_startup_parameters);
// behind a transaction pooler they come from the server, and every server
// connection gets the same ones (the role's or database's settings, or the
// pooler's connect_query), so one session tells.
func checkSessionSettings(ctx context.Context, db *sql.DB, want map[string]time.Duration) error {
	rows, err := db.QueryContext(ctx, `SELECT name, setting FROM pg_settings
		WHERE name IN ('TimeZone', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout')`)
	if err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var name, setting string
		if err := rows.Scan(&name, &setting); err != nil {
			return fmt.Errorf("read session settings: %w", err)
		}
		if name == "TimeZone" {
			if setting != "UTC" && setting != "Etc/UTC" {
				problems = append(problems, fmt.Sprintf("TimeZone is %s, want UTC", setting))
			}
			continue
		}
		d := want[name]
		if d <= 0 {
			continue // the server's default was asked for
		}
		if setting != strconv.FormatInt(d.Milliseconds(), 10) {
			problems = append(problems, fmt.Sprintf("%s is %sms, want %dms", name, setting, d.Milliseconds()))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read session settings: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the database sessions do not have the configured settings (%s): behind a transaction pooler set them for the role, e.g. ALTER ROLE <role> IN DATABASE <db> SET statement_timeout = '15s', or in the pooler's connect_query (docs/SCALING.md)",
			strings.Join(problems, "; "))
	}
	return nil
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
	pooler   Pooler
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

// SessionsPinned reports whether every connection db hands out is a
// PostgreSQL session of its own for as long as it is held, which LISTEN and
// session-level advisory locks need: false for a pool opened behind a
// transaction pooler.
func SessionsPinned(db *gorm.DB) bool {
	c := connectorOf(db)
	return c == nil || c.pooler != PoolerTransaction
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
