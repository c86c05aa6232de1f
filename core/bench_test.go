package core_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// BenchmarkContendedExpenses measures 32 writers recording expenses on ONE
// project, the hottest write there is (every expense locks the project row
// and re-reads its spending), three ways in the same run and on the same
// pool size (20 connections, the production default):
//
//   - raw: a pgx transaction doing the statements of ExpenseService's
//     transaction by hand (lock the project, sum its spending, insert the
//     expense, the audit row, and the event with its delivery and NOTIFY)
//     on the same connection settings as the app (QueryExecModeExec);
//   - service: ExpenseService without plugins (load, transaction with the
//     re-check, in the project's write queue);
//   - plugin: the same with the budget-guard example (real Wasm) deciding
//     on every expense before the transaction.
//
// It reports writes/s of each and the ratios service/raw and plugin/raw.
func BenchmarkContendedExpenses(b *testing.B) {
	ctx := context.Background()
	shared := testenv.DB(b)
	tn, owner := workTenant(b, shared)
	sc := tn.Scope()
	db, err := tenant.OpenDB(ctx, testenv.DatabaseURL(), &tenant.DBOptions{MaxOpenConns: 20, AcquireTimeout: 3 * time.Second,
		StatementTimeout: 15 * time.Second, LockTimeout: 3 * time.Second, IdleInTransactionTimeout: 15 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tenant.SQLDB(db).Close() })
	cfg, err := pgxpool.ParseConfig(testenv.DatabaseURL())
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 20
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	rawExec, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rawExec.Close)
	prepared := cfg.Copy()
	prepared.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	rawPrepared, err := pgxpool.NewWithConfig(ctx, prepared)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rawPrepared.Close)

	budget := &core.Money{AmountMinor: 1 << 60, Currency: "EUR"}
	events := core.EventSink{Consumers: []string{"notifications"}}
	plain := &core.ExpenseService{DB: db, Events: events, Queue: &core.WriteQueue{}}
	guarded := &core.ExpenseService{DB: db, Events: events, Queue: &core.WriteQueue{},
		Hooks: core.ValidationHooks{Runner: budgetGuard(b, shared, tn.ID, 1<<60)}}
	today := core.DateOf(time.Now())
	in := core.ExpenseInput{AmountMinor: 100, Currency: "EUR", Category: "bench", SpentOn: today}
	var rawExpense func(ctx context.Context, raw *pgxpool.Pool, projectID uuid.UUID) error

	rawWrite := func(raw *pgxpool.Pool) func(ctx context.Context, projectID uuid.UUID) error {
		return func(ctx context.Context, projectID uuid.UUID) error { return rawExpense(ctx, raw, projectID) }
	}
	rawExpense = func(ctx context.Context, raw *pgxpool.Pool, projectID uuid.UUID) error {
		tx, err := raw.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		var version, planned int64
		var currency string
		if err := tx.QueryRow(ctx, "SELECT version, budget_minor, currency FROM "+sc.Table("projects")+
			" WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE", projectID).Scan(&version, &planned, &currency); err != nil {
			return err
		}
		var spent string
		var n int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(sum(amount_minor), 0)::text, count(*) FROM "+sc.Table("expenses")+
			" WHERE project_id = $1 AND deleted_at IS NULL", projectID).Scan(&spent, &n); err != nil {
			return err
		}
		id, event := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
		if _, err := tx.Exec(ctx, "INSERT INTO "+sc.Table("expenses")+` (id, project_id, amount_minor, currency, category, spent_on, note, version, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, '', 1, $7, now())`, id, projectID, in.AmountMinor, in.Currency, in.Category, today.Time(), owner.UserID); err != nil {
			return err
		}
		details, _ := json.Marshal(map[string]any{"project_id": projectID, "amount_minor": in.AmountMinor, "currency": in.Currency})
		if _, err := tx.Exec(ctx, "INSERT INTO "+sc.Table("audit_log")+` (id, at, actor_id, action, object_type, object_id, outcome, request_id, details)
			VALUES ($1, now(), $2, 'expense.create', 'expense', $3, 'success', '', $4)`, uuid.Must(uuid.NewV7()), owner.UserID, id.String(), string(details)); err != nil {
			return err
		}
		payload, _ := json.Marshal(map[string]any{"id": id, "project_id": projectID, "amount_minor": in.AmountMinor})
		if _, err := tx.Exec(ctx, `WITH e AS (
				INSERT INTO public.outbox (id, tenant_id, type, subject_id, actor_id, payload, dedupe_key, occurred_at)
				VALUES ($1, $2, 'expense.recorded', $3, $4, $5, NULL, now()) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
			), d AS (
				INSERT INTO public.outbox_deliveries (event_id, consumer) SELECT e.id, c FROM e CROSS JOIN unnest('{notifications}'::text[]) AS c
			)
			SELECT e.id FROM e, pg_notify('promanage_outbox', '')`,
			event, tn.ID, id.String(), owner.UserID, string(payload)); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}

	const writers, each = 32, 15
	run := func(name string, write func(ctx context.Context, projectID uuid.UUID) error) time.Duration {
		p := newProject(b, shared, sc, owner, core.ProjectInput{Budget: budget})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		start := time.Now()
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					if err := write(ctx, p.ID); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			b.Fatalf("%s: %v", name, firstErr)
		}
		return time.Since(start)
	}
	service := func(s *core.ExpenseService) func(ctx context.Context, projectID uuid.UUID) error {
		return func(ctx context.Context, projectID uuid.UUID) error {
			_, err := s.Create(ctx, sc, owner, projectID, in)
			return err
		}
	}
	run("warm-up", service(guarded)) // plugin compiled and instantiated, pools warm
	var dRaw, dPrep, dSvc, dPlug time.Duration
	b.ResetTimer()
	for b.Loop() {
		dRaw += run("raw", rawWrite(rawExec))
		dSvc += run("service", service(plain))
		dPlug += run("plugin", service(guarded))
		dPrep += run("raw-prepared", rawWrite(rawPrepared))
	}
	writes := float64(b.N * writers * each)
	b.ReportMetric(writes/dRaw.Seconds(), "raw-writes/s")
	// For reference: the same raw transaction with prepared statements
	// (pgx's default), whose plans are cached (RATIONALE.md, "Contended
	// writes").
	b.ReportMetric(writes/dPrep.Seconds(), "raw-prepared-writes/s")
	b.ReportMetric(writes/dSvc.Seconds(), "service-writes/s")
	b.ReportMetric(writes/dPlug.Seconds(), "plugin-writes/s")
	b.ReportMetric(dRaw.Seconds()/dSvc.Seconds(), "service/raw")
	b.ReportMetric(dRaw.Seconds()/dPlug.Seconds(), "plugin/raw")
}
