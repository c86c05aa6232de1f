package tenant_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// BenchmarkHotRead compares a primary-key read through a schema-qualified
// table name (one round trip) with the same read inside Scope.Tx (BEGIN,
// set_config, read, COMMIT), and reports the ratio tx/qualified.
func BenchmarkHotRead(b *testing.B) {
	ctx := context.Background()
	db := testenv.DB(b)
	reg := tenant.NewRegistry(db, nil)
	tn, err := reg.Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("bench"), Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	sc := tn.Scope()
	id := uuid.New()
	if err := db.Exec("INSERT INTO "+sc.Table("projects")+" (id, key, name, status, created_by) VALUES (?, 'B', 'b', 'active', ?)", id, id).Error; err != nil {
		b.Fatal(err)
	}
	var name string
	qualified := func() {
		if err := db.WithContext(ctx).Table(sc.Table("projects")).Select("name").Where("id = ?", id).Take(&name).Error; err != nil {
			b.Fatal(err)
		}
	}
	inTx := func() {
		err := sc.Tx(ctx, db, func(tx *gorm.DB) error {
			return tx.Table("projects").Select("name").Where("id = ?", id).Take(&name).Error
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	var dq, dt time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		qualified()
		t1 := time.Now()
		inTx()
		dt += time.Since(t1)
		dq += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(dq.Microseconds())/n, "us/qualified-read")
	b.ReportMetric(float64(dt.Microseconds())/n, "us/tx-read")
	b.ReportMetric(float64(dt)/float64(dq), "tx/qualified")
}

// BenchmarkMigrateNothingToDo measures `promanage migrate` with nothing to do
// on a fleet of 1,000 tenants against a fleet of one, and reports the ratio
// (it should be about 1: the no-op is one indexed query). The fleets live in
// their own databases, created on the first run and kept.
func BenchmarkMigrateNothingToDo(b *testing.B) {
	ctx := context.Background()
	one := fleet(b, "promanage_bench_fleet1", 1)
	many := fleet(b, "promanage_bench_fleet1000", 1000)
	var d1, dn time.Duration
	for b.Loop() {
		t0 := time.Now()
		if rep, err := one.Migrate(ctx, nil); err != nil || rep.Pending != 0 {
			b.Fatal(err, rep)
		}
		t1 := time.Now()
		if rep, err := many.Migrate(ctx, nil); err != nil || rep.Pending != 0 {
			b.Fatal(err, rep)
		}
		dn += time.Since(t1)
		d1 += t1.Sub(t0)
	}
	b.ReportMetric(float64(d1.Microseconds())/float64(b.N), "us/noop-1-tenant")
	b.ReportMetric(float64(dn.Microseconds())/float64(b.N), "us/noop-1000-tenants")
	b.ReportMetric(float64(dn)/float64(d1), "1000/1")
}

func fleet(b *testing.B, dbname string, n int) *tenant.Registry {
	b.Helper()
	ctx := context.Background()
	u, _ := url.Parse(testenv.DatabaseURL())
	admin := *u
	admin.Path = "/postgres"
	conn, err := pgx.Connect(ctx, admin.String())
	if err != nil {
		b.Fatal(err)
	}
	var exists bool
	conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dbname).Scan(&exists)
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+dbname); err != nil {
			b.Fatal(err)
		}
	}
	conn.Close(ctx)
	u.Path = "/" + dbname
	db, err := tenant.OpenDB(ctx, u.String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tenant.SQLDB(db).Close() })
	if err := tenant.MigratePublic(ctx, db); err != nil {
		b.Fatal(err)
	}
	reg := tenant.NewRegistry(db, nil)
	if _, err := reg.Migrate(ctx, nil); err != nil {
		b.Fatal(err)
	}
	var have int64
	db.Table("public.tenants").Count(&have)
	for i := int(have); i < n; i++ {
		if _, err := reg.Provision(ctx, tenant.ProvisionParams{Slug: fmt.Sprintf("fleet-%05d", i), Name: "fleet"}); err != nil && !strings.Contains(err.Error(), "taken") {
			b.Fatal(err)
		}
	}
	return reg
}
