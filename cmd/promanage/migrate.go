package main

import (
	"context"
	"flag"
	"fmt"
	"sort"

	"github.com/promanage/promanage/tenant"
)

func (m *Main) runMigrate(ctx context.Context, args []string) error {
	var quiet bool
	if _, err := m.flags("migrate", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&quiet, "quiet", false, "print only the summary")
	}); err != nil {
		return err
	}
	// No session timeouts: migrations wait for locks as long as they must
	// (and lift the server's own timeouts, see tenant.MigratePublic). Through
	// a transaction pooler too: they need no session (advisory locks are
	// transaction-level).
	o, err := m.Config.connOptions()
	if err != nil {
		return err
	}
	o.MaxOpenConns = m.Config.MigrateParallel + 2
	db, err := tenant.OpenDB(ctx, m.Config.DatabaseURL, o)
	if err != nil {
		return err
	}
	defer tenant.SQLDB(db).Close()
	return m.migrate(ctx, tenant.NewRegistry(db, nil), quiet)
}

// migrate upgrades the public schema, then every tenant schema.
func (m *Main) migrate(ctx context.Context, reg *tenant.Registry, quiet bool) error {
	if err := tenant.MigratePublic(ctx, reg.DB()); err != nil {
		return err
	}
	rep, err := reg.Migrate(ctx, &tenant.MigrateOptions{
		Parallel: m.Config.MigrateParallel,
		Progress: func(done, total int, slug string, err error) {
			if quiet {
				return
			}
			status := "ok"
			if err != nil {
				status = "FAILED: " + err.Error()
			}
			fmt.Fprintf(m.Stdout, "[%d/%d] %s %s\n", done, total, slug, status)
		},
	})
	if err != nil {
		return err
	}
	if rep.Pending == 0 {
		fmt.Fprintf(m.Stdout, "migrate: public schema up to date; all tenant schemas at version %d (nothing to do)\n", rep.Target)
		return nil
	}
	fmt.Fprintf(m.Stdout, "migrate: %d of %d tenant schemas migrated to version %d in %s\n", rep.Migrated, rep.Pending, rep.Target, rep.Elapsed.Round(1e6))
	versions := make([]int, 0, len(rep.Versions))
	for v := range rep.Versions {
		versions = append(versions, v)
	}
	sort.Ints(versions)
	for _, v := range versions {
		fmt.Fprintf(m.Stdout, "  version %d: %d tenants\n", v, rep.Versions[v])
	}
	if len(rep.Failures) > 0 {
		slugs := make([]string, 0, len(rep.Failures))
		for s := range rep.Failures {
			slugs = append(slugs, s)
		}
		sort.Strings(slugs)
		for _, s := range slugs {
			fmt.Fprintf(m.Stdout, "  FAILED %s: %s\n", s, rep.Failures[s])
		}
		return fmt.Errorf("%d tenant schemas failed to migrate; fix the cause and run migrate again (it resumes)", len(rep.Failures))
	}
	return nil
}
