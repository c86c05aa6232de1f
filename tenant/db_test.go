package tenant_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

func openPool(t *testing.T, opts tenant.DBOptions) *gorm.DB {
	t.Helper()
	testenv.DB(t) // the database exists and answers
	db, err := tenant.OpenDB(context.Background(), testenv.DatabaseURL(), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tenant.SQLDB(db).Close() })
	return db
}

// A full pool makes the next operation fail after the acquire timeout, with
// an error the API answers 503, and counts it; the work of the operation
// that got a connection runs under its own (longer) context.
func TestPoolAcquireIsBounded(t *testing.T) {
	db := openPool(t, tenant.DBOptions{MaxOpenConns: 1, AcquireTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	tx := db.WithContext(ctx).Begin() // holds the only connection
	if tx.Error != nil {
		t.Fatal(tx.Error)
	}
	t.Cleanup(func() { tx.Rollback() })

	start := time.Now()
	err := db.WithContext(ctx).Exec("SELECT 1").Error
	waited := time.Since(start)
	if !errors.Is(err, tenant.ErrPoolTimeout) || !tenant.Unavailable(err) {
		t.Fatalf("second operation on a full pool: %v, want ErrPoolTimeout", err)
	}
	if waited < 250*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %v for a connection, want about the 300ms bound", waited)
	}
	if st, ok := tenant.Stats(db); !ok || st.AcquireTimeouts != 1 || st.MaxConns != 1 {
		t.Fatalf("stats: %+v %v", st, ok)
	}
	// The connection holder is unaffected: its statements run past the
	// acquire bound.
	if err := tx.Exec("SELECT pg_sleep(0.4)").Error; err != nil {
		t.Fatalf("work on an acquired connection: %v", err)
	}
	tx.Rollback()
	if err := db.WithContext(ctx).Exec("SELECT 1").Error; err != nil {
		t.Fatalf("after the connection came back: %v", err)
	}
}

// The session timeouts are set on every pooled session, and their
// failures, like every transient failure of the database, are classified
// Unavailable (503) while a broken query is not.
func TestSessionTimeoutsAndUnavailable(t *testing.T) {
	db := openPool(t, tenant.DBOptions{MaxOpenConns: 3, StatementTimeout: 200 * time.Millisecond,
		LockTimeout: 150 * time.Millisecond, IdleInTransactionTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	var settings []string
	if err := db.Raw("SELECT current_setting('statement_timeout') UNION ALL SELECT current_setting('lock_timeout') UNION ALL SELECT current_setting('idle_in_transaction_session_timeout')").
		Scan(&settings).Error; err != nil {
		t.Fatal(err)
	}
	if len(settings) != 3 || settings[0] != "200ms" || settings[1] != "150ms" || settings[2] != "300ms" {
		t.Fatalf("session settings %v", settings)
	}

	// A lock held elsewhere: lock_timeout (55P03).
	key := time.Now().UnixNano()
	holder := db.WithContext(ctx).Begin()
	if err := holder.Exec("SELECT pg_advisory_xact_lock(?)", key).Error; err != nil {
		t.Fatal(err)
	}
	lockErr := db.Transaction(func(tx *gorm.DB) error {
		return tx.Exec("SELECT pg_advisory_xact_lock(?)", key).Error
	})
	holder.Rollback()

	// A transaction left idle: the server ends its session (25P03 or a
	// closed connection on the next statement).
	idle := db.WithContext(ctx).Begin()
	idle.Exec("SELECT 1")
	time.Sleep(600 * time.Millisecond)
	idleErr := idle.Exec("SELECT 1").Error
	idle.Rollback()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, downErr := tenant.OpenDB(ctx, "postgres://postgres@"+dead+"/x?sslmode=disable", &tenant.DBOptions{AcquireTimeout: time.Second})

	var killed error
	func() {
		c, err := tenant.SQLDB(db).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var pid int
		if err := c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if err := testenv.DB(t).Exec("SELECT pg_terminate_backend(?)", pid).Error; err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		_, killed = c.ExecContext(ctx, "SELECT 1")
	}()

	cases := []struct {
		name        string
		err         error
		unavailable bool
	}{
		{"StatementTimeout", db.Exec("SELECT pg_sleep(1)").Error, true},
		{"LockTimeout", lockErr, true},
		{"IdleInTransactionTimeout", idleErr, true},
		{"ServerUnreachable", downErr, true},
		{"AdminShutdown", killed, true},
		{"SyntaxError", db.Exec("SELEC 1").Error, false},
		{"UndefinedTable", db.Exec("SELECT * FROM public.no_such_table").Error, false},
		{"DivisionByZero", db.Exec("SELECT 1/0").Error, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("no error")
			}
			if got := tenant.Unavailable(tc.err); got != tc.unavailable {
				t.Fatalf("Unavailable(%v) = %v, want %v", tc.err, got, tc.unavailable)
			}
		})
	}
	// The pool recovers from the terminated session by itself.
	if err := db.Exec("SELECT 1").Error; err != nil {
		t.Fatalf("after a terminated session: %v", err)
	}
}

// A tenant holds at most half of the pool in transactions: its next
// transaction waits (holding no connection) and fails after the acquire
// bound, while another tenant's transactions and reads get connections at
// once.
func TestTenantHoldsAtMostHalfThePoolInTransactions(t *testing.T) {
	db := openPool(t, tenant.DBOptions{MaxOpenConns: 4, AcquireTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	reg := tenant.NewRegistry(testenv.DB(t), nil)
	a, b := provision(t, reg, 0).Scope(), provision(t, reg, 0).Scope()
	hold := make(chan struct{})
	var held sync.WaitGroup
	for range 2 { // a's share: 2 of 4
		held.Add(1)
		go a.Tx(ctx, db, func(*gorm.DB) error { held.Done(); <-hold; return nil })
	}
	held.Wait()
	t.Cleanup(func() { close(hold) })

	start := time.Now()
	err := a.Tx(ctx, db, func(*gorm.DB) error { return nil })
	if !errors.Is(err, tenant.ErrPoolTimeout) || !tenant.Unavailable(err) {
		t.Fatalf("a's third transaction: %v, want ErrPoolTimeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("a's third transaction failed after %v, before the 300ms bound", d)
	}
	start = time.Now()
	if err := b.Tx(ctx, db, func(tx *gorm.DB) error { return tx.Exec("SELECT 1").Error }); err != nil {
		t.Fatalf("b's transaction while a holds its share: %v", err)
	}
	if err := db.WithContext(ctx).Exec("SELECT 1").Error; err != nil {
		t.Fatalf("a read while a holds its share: %v", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("b waited %v", d)
	}
}
