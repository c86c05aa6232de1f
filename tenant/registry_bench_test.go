package tenant_test

import (
	"context"
	"testing"
	"time"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// BenchmarkTenantLookup measures what the API pays per unsafe request to
// read the tenant's row fresh (so a suspension made by another process is
// seen at once) against the cached lookup reads use, and reports the
// difference per request and the ratio fresh/cached.
func BenchmarkTenantLookup(b *testing.B) {
	ctx := context.Background()
	db := testenv.DB(b)
	reg := tenant.NewRegistry(db, &tenant.Options{CacheTTL: time.Hour})
	tn, err := reg.Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("lookup"), Name: "lookup"})
	if err != nil {
		b.Fatal(err)
	}
	var dc, df time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := reg.BySlug(ctx, tn.Slug); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := reg.BySlugFresh(ctx, tn.Slug); err != nil {
			b.Fatal(err)
		}
		df += time.Since(t1)
		dc += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(dc.Nanoseconds())/n/1000, "us/cached")
	b.ReportMetric(float64(df.Nanoseconds())/n/1000, "us/fresh")
	b.ReportMetric(float64(df)/float64(max(dc, 1)), "fresh/cached")
}
