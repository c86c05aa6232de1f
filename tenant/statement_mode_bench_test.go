package tenant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// BenchmarkStatementModes measures a tenant's primary-key read (explicit
// columns, qualified table) in every statement mode, directly and, for the
// modes that work there, through PgBouncer in transaction mode; the
// configurations take turns within each iteration, and each is reported in
// microseconds per read and as a ratio to direct exec (today's default).
// PROMANAGE_DB_STATEMENT_MODE chooses among them (docs/SCALING.md).
func BenchmarkStatementModes(b *testing.B) {
	ctx := context.Background()
	db := testenv.DB(b)
	tn, err := tenant.NewRegistry(db, nil).Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("modes"), Name: "modes"})
	if err != nil {
		b.Fatal(err)
	}
	id := uuid.New()
	if err := db.Exec("INSERT INTO "+tn.Scope().Table("projects")+" (id, key, name, status, created_by) VALUES (?, 'M', 'm', 'active', ?)", id, id).Error; err != nil {
		b.Fatal(err)
	}
	bouncer := testenv.StartPgBouncer(b, &testenv.PgBouncerOptions{PoolSize: 2})
	type config struct {
		name string
		db   *gorm.DB
		took time.Duration
	}
	var configs []*config
	open := func(name, url string, mode pgx.QueryExecMode, pooler tenant.Pooler) {
		d, err := tenant.OpenDB(ctx, url, &tenant.DBOptions{MaxOpenConns: 2, StatementMode: mode, Pooler: pooler})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tenant.SQLDB(d).Close() })
		configs = append(configs, &config{name: name, db: d})
	}
	for _, m := range []string{"exec", "cache_statement", "cache_describe", "describe_exec", "simple_protocol"} {
		mode, _ := tenant.ParseStatementMode(m)
		open("direct-"+m, testenv.DatabaseURL(), mode, tenant.PoolerNone)
	}
	for _, mode := range pooledModes {
		open("pgbouncer-"+strings.ReplaceAll(mode.String(), " ", "_"), bouncer.URL(""), mode, tenant.PoolerTransaction)
	}
	query := "SELECT id, key, name, status, created_at FROM " + tn.Scope().Table("projects") + " WHERE id = ?"
	var row struct {
		ID        uuid.UUID
		Key       string
		Name      string
		Status    string
		CreatedAt time.Time
	}
	for _, c := range configs { // warm every cache before timing
		if err := c.db.WithContext(ctx).Raw(query, id).Scan(&row).Error; err != nil || row.ID != id {
			b.Fatalf("%s: %v", c.name, err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		for _, c := range configs {
			t0 := time.Now()
			if err := c.db.WithContext(ctx).Raw(query, id).Scan(&row).Error; err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			c.took += time.Since(t0)
		}
	}
	n := float64(b.N)
	base := configs[0].took
	for _, c := range configs {
		b.ReportMetric(float64(c.took.Microseconds())/n, "us/"+c.name)
		b.ReportMetric(float64(base)/float64(c.took), "x-exec/"+c.name)
	}
}
