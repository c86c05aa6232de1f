package tenant_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

func TestParseStatementModeAndPooler(t *testing.T) {
	for name, want := range map[string]pgx.QueryExecMode{
		"cache_statement": pgx.QueryExecModeCacheStatement,
		"cache_describe":  pgx.QueryExecModeCacheDescribe,
		"describe_exec":   pgx.QueryExecModeDescribeExec,
		"exec":            pgx.QueryExecModeExec,
		"simple_protocol": pgx.QueryExecModeSimpleProtocol,
	} {
		if got, err := tenant.ParseStatementMode(name); err != nil || got != want {
			t.Errorf("ParseStatementMode(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "Exec", "prepare", "cache statement"} {
		if _, err := tenant.ParseStatementMode(bad); err == nil {
			t.Errorf("ParseStatementMode(%q): no error", bad)
		}
	}
	for name, want := range map[string]tenant.Pooler{"": tenant.PoolerNone, "none": tenant.PoolerNone, "transaction": tenant.PoolerTransaction} {
		if got, err := tenant.ParsePooler(name); err != nil || got != want {
			t.Errorf("ParsePooler(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, bad := range []string{"session", "pgbouncer", "statement"} {
		if _, err := tenant.ParsePooler(bad); err == nil {
			t.Errorf("ParsePooler(%q): no error", bad)
		}
	}
}

// Behind a transaction pooler the statement modes it breaks are refused
// before any connection is made, with the reason.
func TestPooledStatementModesRefused(t *testing.T) {
	for mode, want := range map[pgx.QueryExecMode]string{
		pgx.QueryExecModeCacheStatement: "cache_statement does not work behind a transaction pooler",
		pgx.QueryExecModeDescribeExec:   "describe_exec is unsafe behind a transaction pooler",
	} {
		_, err := tenant.OpenDB(context.Background(), "postgres://nobody@127.0.0.1:1/none", &tenant.DBOptions{StatementMode: mode, Pooler: tenant.PoolerTransaction})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: got %v, want %q", mode, err, want)
		}
	}
}

// pooledModes are the statement modes that work behind a transaction pooler.
var pooledModes = []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheDescribe}

// The tenant isolation tests, through PgBouncer in transaction mode with ONE
// server connection, in every statement mode that is allowed there: every
// pool, transaction and tenant of the run shares that server session, so
// anything tenant-specific left on a session would show.
func TestIsolationThroughPgBouncer(t *testing.T) {
	testenv.DB(t)
	bouncer := testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{PoolSize: 1})
	for _, mode := range pooledModes {
		through := func(t *testing.T, maxConns int) *gorm.DB {
			t.Helper()
			return openPoolAt(t, bouncer.URL(""), &tenant.DBOptions{MaxOpenConns: maxConns, StatementMode: mode, Pooler: tenant.PoolerTransaction})
		}
		name := strings.ReplaceAll(mode.String(), " ", "_")
		t.Run(name+"/OneConnectionAlternatingTenants", func(t *testing.T) { testOneConnectionAlternatingTenants(t, through) })
		t.Run(name+"/ConcurrentTenantsSeeOnlyTheirRows", func(t *testing.T) { testConcurrentTenantsSeeOnlyTheirRows(t, through) })
		t.Run(name+"/PanicAndRollbackThenOtherTenant", func(t *testing.T) { testPanicAndRollbackThenOtherTenant(t, through) })
		t.Run(name+"/TwoReplicasOneServerConnection", func(t *testing.T) { testTwoPoolsOneSession(t, through) })
		if mode != pgx.QueryExecModeCacheDescribe {
			// cache_describe keeps a statement's result description: a
			// `SELECT *` whose row type a migration changed fails (the
			// reason exec is the default; docs/SCALING.md).
			t.Run(name+"/SchemasAtDifferentVersions", func(t *testing.T) { testSchemasAtDifferentVersions(t, through) })
		}
	}
	for _, p := range bouncer.Pools(t) {
		if p.ServerActive+p.ServerIdle+p.ServerUsed > 1 {
			t.Errorf("pgbouncer pool %s had %d server connections, want at most 1", p.Database, p.ServerActive+p.ServerIdle+p.ServerUsed)
		}
	}
}

// Two pools (two replicas) alternate tenants' transactions that set the
// transaction-local search_path, on one server session: an unqualified read
// outside a transaction never sees another tenant's schema.
func testTwoPoolsOneSession(t *testing.T, open opener) {
	ctx := context.Background()
	a, b := open(t, 2), open(t, 2)
	reg := tenant.NewRegistry(a, nil)
	ta, tb := provision(t, reg, 0), provision(t, reg, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i, db := range []*gorm.DB{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := []*tenant.Tenant{ta, tb}[i]
			for range 30 {
				err := own.Scope().Tx(ctx, db, func(tx *gorm.DB) error {
					var sp string
					if err := tx.Raw("SELECT current_setting('search_path')").Scan(&sp).Error; err != nil {
						return err
					}
					if !strings.Contains(sp, own.SchemaName) {
						return errors.New("search_path in the transaction is " + sp)
					}
					return nil
				})
				if err == nil {
					var sp string
					err = db.Raw("SELECT current_setting('search_path')").Scan(&sp).Error
					if err == nil && strings.Contains(sp, "t_") {
						err = errors.New("search_path leaked out of a transaction: " + sp)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Why cache_statement is refused behind PgBouncer 1.18: two clients that
// prepare the same statement reach one server session, where pgx's name for
// it already exists (or, with more server connections, does not exist where
// the statement next runs).
func TestCacheStatementBreaksBehindPgBouncer(t *testing.T) {
	testenv.DB(t)
	bouncer := testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{PoolSize: 1})
	// Pooler none on purpose: this is what the refusal prevents.
	db := openPoolAt(t, bouncer.URL(""), &tenant.DBOptions{MaxOpenConns: 2, StatementMode: pgx.QueryExecModeCacheStatement})
	sqlDB := tenant.SQLDB(db)
	ctx := context.Background()
	c1, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var n int
	if err := c1.QueryRowContext(ctx, "SELECT $1::int + 1", 1).Scan(&n); err != nil {
		t.Fatalf("first client: %v", err)
	}
	err = c2.QueryRowContext(ctx, "SELECT $1::int + 1", 1).Scan(&n)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "42P05" && pgErr.Code != "26000") {
		t.Fatalf("second client on the same server session: got %v, want 42P05 (prepared statement already exists) or 26000", err)
	}
	t.Logf("as expected: %v", err)
}

// Behind a transaction pooler the session timeouts cannot be startup
// parameters: PgBouncer refuses them (and says so), or, told to ignore
// them, drops them silently, which OpenDB notices and refuses; configured
// on the server side (here PgBouncer's connect_query; in production the
// role's settings) they are checked and enforced.
func TestSessionTimeoutsBehindPgBouncer(t *testing.T) {
	testenv.DB(t)
	ctx := context.Background()
	timeouts := tenant.DBOptions{StatementTimeout: 700 * time.Millisecond, LockTimeout: 300 * time.Millisecond, IdleInTransactionTimeout: 2 * time.Second}
	t.Run("RefusedStartupParameters", func(t *testing.T) {
		b := testenv.StartPgBouncer(t, nil)
		o := timeouts
		_, err := tenant.OpenDB(ctx, b.URL(""), &o)
		if err == nil || !strings.Contains(err.Error(), "PROMANAGE_DB_POOLER=transaction") {
			t.Fatalf("got %v, want the pooler hint", err)
		}
	})
	t.Run("DroppedStartupParameters", func(t *testing.T) {
		b := testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{IgnoreStartupParameters: []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"}})
		o := timeouts
		_, err := tenant.OpenDB(ctx, b.URL(""), &o)
		if err == nil || !strings.Contains(err.Error(), "statement_timeout is 0ms, want 700ms") {
			t.Fatalf("got %v, want the dropped timeouts noticed", err)
		}
	})
	t.Run("MissingOnTheServer", func(t *testing.T) {
		b := testenv.StartPgBouncer(t, nil)
		o := timeouts
		o.Pooler = tenant.PoolerTransaction
		_, err := tenant.OpenDB(ctx, b.URL(""), &o)
		if err == nil || !strings.Contains(err.Error(), "ALTER ROLE") {
			t.Fatalf("got %v, want the missing timeouts named with the fix", err)
		}
	})
	t.Run("SetByThePooler", func(t *testing.T) {
		b := testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{
			ConnectQuery: "SET statement_timeout = 700; SET lock_timeout = 300; SET idle_in_transaction_session_timeout = 2000"})
		o := timeouts
		o.Pooler = tenant.PoolerTransaction
		db := openPoolAt(t, b.URL(""), &o)
		start := time.Now()
		err := db.WithContext(ctx).Exec("SELECT pg_sleep(5)").Error
		if !tenant.Unavailable(err) || time.Since(start) > 4*time.Second {
			t.Fatalf("a 5 s statement: %v after %v, want the 700 ms statement timeout (unavailable)", err, time.Since(start))
		}
	})
}

// A wait for a server connection inside PgBouncer is bounded by its
// query_wait_timeout, not by the pool's acquire timeout (the client
// connection is there at once): with it set, a saturated server pool
// answers an error the API maps to 503, not a hang.
func TestPgBouncerQueueWaitIsBounded(t *testing.T) {
	testenv.DB(t)
	ctx := context.Background()
	b := testenv.StartPgBouncer(t, &testenv.PgBouncerOptions{PoolSize: 1, QueryWaitTimeout: 2 * time.Second})
	db := openPoolAt(t, b.URL(""), &tenant.DBOptions{MaxOpenConns: 2, Pooler: tenant.PoolerTransaction})
	// Another client holds the only server connection in a transaction.
	holder, err := pgx.Connect(ctx, b.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var n int
	err = db.WithContext(ctx).Raw("SELECT 1").Scan(&n).Error
	took := time.Since(start)
	if err == nil || !tenant.Unavailable(err) || took > 10*time.Second {
		t.Fatalf("query behind a saturated server pool: %v after %v, want an unavailable error within about 2 s", err, took)
	}
	t.Logf("saturated pooler answered after %v: %v", took.Round(time.Millisecond), err)
}
