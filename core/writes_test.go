package core_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/plugins"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// connHungryRunner is a hook runner that needs a pooled connection for
// every call, as the registry's project callback once did. Given a pool of
// exactly one connection, a hook run while a transaction holds that
// connection cannot get one: it fails after the acquire bound, and the
// write with it. It records what each request carried.
type connHungryRunner struct {
	db   *gorm.DB
	mu   sync.Mutex
	reqs []core.ValidationRequest
	errs []error
}

func (r *connHungryRunner) RunValidation(ctx context.Context, _ uuid.UUID, req core.ValidationRequest) (core.Verdict, error) {
	err := r.db.WithContext(ctx).Exec("SELECT 1").Error
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s %s: %w", req.Hook, req.Operation, err))
		return core.Verdict{}, err
	}
	r.reqs = append(r.reqs, req)
	return core.Verdict{Allowed: true}, nil
}

// No write path runs a validation hook while a transaction is open or a
// pooled connection is held: with a one-connection pool, every validated
// write of every kind succeeds, and each hook got the project context
// (loaded before, not read through a second connection).
func TestHooksNeverRunInsideATransaction(t *testing.T) {
	ctx := context.Background()
	shared := testenv.DB(t)
	tn, owner := workTenant(t, shared)
	sc := tn.Scope()
	one, err := tenant.OpenDB(ctx, testenv.DatabaseURL(), &tenant.DBOptions{MaxOpenConns: 1, AcquireTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tenant.SQLDB(one).Close() })
	runner := &connHungryRunner{db: one}
	hooks := core.ValidationHooks{Runner: runner}
	bucket, err := storage.OpenBucket(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bucket.Close() })
	projects := &core.ProjectService{DB: one, Hooks: hooks}
	tasks := &core.TaskService{DB: one, Hooks: hooks}
	expenses := &core.ExpenseService{DB: one, Hooks: hooks, Queue: &core.WriteQueue{}}
	docs := &core.DocumentService{DB: one, Bucket: bucket, Registry: tenant.NewRegistry(one, nil), Hooks: hooks,
		Defaults: tenant.StorageSettings{QuotaBytes: 1 << 30, MaxFileBytes: 1 << 20}}

	p, err := projects.Create(ctx, sc, owner, core.ProjectInput{Key: "ONE", Name: "one", Budget: &core.Money{AmountMinor: 10000, Currency: "EUR"}})
	if err != nil {
		t.Fatalf("project create: %v", err)
	}
	name := "renamed"
	if p, err = projects.Update(ctx, sc, owner, p.ID, p.Version, core.ProjectUpdate{Name: &name}); err != nil {
		t.Fatalf("project update: %v", err)
	}
	task, err := tasks.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "t"})
	if err != nil {
		t.Fatalf("task create: %v", err)
	}
	st := core.TaskInProgress
	if _, err := tasks.Update(ctx, sc, owner, p.ID, task.ID, task.Version, core.TaskUpdate{Status: &st}); err != nil {
		t.Fatalf("task update: %v", err)
	}
	if _, err := expenses.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 250, Currency: "EUR", SpentOn: core.DateOf(time.Now())}); err != nil {
		t.Fatalf("expense: %v", err)
	}
	doc, err := docs.Create(ctx, sc, owner, p.ID, core.Upload{Title: "d", Filename: "a.txt", Body: strings.NewReader("first"), DeclaredBytes: 5})
	if err != nil {
		t.Fatalf("document create: %v", err)
	}
	if doc, err = docs.AddVersion(ctx, sc, owner, doc.ID, core.Upload{Filename: "b.txt", Body: strings.NewReader("second"), DeclaredBytes: 6}); err != nil {
		t.Fatalf("document version: %v", err)
	}
	title := "retitled"
	if doc, err = docs.Update(ctx, sc, owner, doc.ID, doc.RowVersion, core.DocumentUpdate{Title: &title}); err != nil {
		t.Fatalf("document update: %v", err)
	}
	if _, err := docs.Restore(ctx, sc, owner, doc.ID, 1); err != nil {
		t.Fatalf("document restore: %v", err)
	}

	if len(runner.errs) > 0 {
		t.Fatalf("hooks could not get a connection (run inside a transaction?): %v", runner.errs)
	}
	want := []string{"project.validate create", "project.validate update", "task.validate create", "task.validate update",
		"expense.validate create", "document.validate create", "document.validate add_version", "document.validate update",
		"document.validate restore"}
	var got []string
	for _, r := range runner.reqs {
		got = append(got, string(r.Hook)+" "+string(r.Operation))
		if r.Hook == core.HookProjectValidate {
			if r.Project != nil {
				t.Errorf("%s %s has a project context", r.Hook, r.Operation)
			}
			continue
		}
		if r.Project == nil || r.Project.ID != p.ID || r.Project.Name != "renamed" || r.Project.BudgetSummary == nil {
			t.Errorf("%s %s: project context %+v", r.Hook, r.Operation, r.Project)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("hooks run: %v, want %v", got, want)
	}
	if s := runner.reqs[len(runner.reqs)-1].Project.BudgetSummary; s.Spent != 250 || s.Planned != 10000 || s.Remaining != 9750 {
		t.Fatalf("budget summary seen by the last hook: %+v", s)
	}
}

// funcRunner runs f for every request.
type funcRunner func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error)

func (f funcRunner) RunValidation(ctx context.Context, _ uuid.UUID, req core.ValidationRequest) (core.Verdict, error) {
	return f(ctx, req)
}

// The transaction re-checks what the hook decided on: a change the hook
// did not see makes the cycle run again on the new state, several makes it
// a conflict with nothing committed, and a stale If-Match is 412 at once.
func TestWritesRecheckWhatTheHookSaw(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	today := core.DateOf(time.Now())
	other := &core.ExpenseService{DB: db} // another replica, no hooks
	spent := func(t *testing.T, id uuid.UUID) int64 {
		t.Helper()
		var n int64
		if err := db.Raw("SELECT coalesce(sum(amount_minor), 0) FROM "+sc.Table("expenses")+" WHERE project_id = ? AND deleted_at IS NULL", id).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("ExpenseSeesSpendingAddedDuringItsHook", func(t *testing.T) {
		p := newProject(t, db, sc, owner, core.ProjectInput{Budget: &core.Money{AmountMinor: 1000, Currency: "EUR"}})
		var seen []int64
		svc := &core.ExpenseService{DB: db, Queue: &core.WriteQueue{}, Hooks: core.ValidationHooks{Runner: funcRunner(
			func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error) {
				seen = append(seen, req.Project.BudgetSummary.Spent)
				if len(seen) == 1 { // another replica records an expense meanwhile
					if _, err := other.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 300, Currency: "EUR", SpentOn: today}); err != nil {
						return core.Verdict{}, err
					}
				}
				return core.Verdict{Allowed: true}, nil
			})}}
		if _, err := svc.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 100, Currency: "EUR", SpentOn: today}); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[0] != 0 || seen[1] != 300 {
			t.Fatalf("spending seen by the hook per attempt: %v, want [0 300]", seen)
		}
		if got := spent(t, p.ID); got != 400 {
			t.Fatalf("spent %d, want 400", got)
		}
	})

	t.Run("ExpenseConflictsWhenTheProjectKeepsChanging", func(t *testing.T) {
		p := newProject(t, db, sc, owner, core.ProjectInput{Budget: &core.Money{AmountMinor: 100000, Currency: "EUR"}})
		calls := 0
		svc := &core.ExpenseService{DB: db, Hooks: core.ValidationHooks{Runner: funcRunner(
			func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error) {
				calls++
				_, err := other.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 1, Currency: "EUR", SpentOn: today})
				return core.Verdict{Allowed: true}, err
			})}}
		_, err := svc.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: 500, Currency: "EUR", SpentOn: today})
		wantCode(t, err, core.ECONFLICT)
		if calls != core.MaxWriteAttempts {
			t.Fatalf("hook ran %d times, want %d", calls, core.MaxWriteAttempts)
		}
		if got := spent(t, p.ID); got != int64(core.MaxWriteAttempts) {
			t.Fatalf("spent %d: the conflicting expense was committed", got)
		}
	})

	t.Run("TaskRunsAgainWhenTheProjectChanged", func(t *testing.T) {
		p := newProject(t, db, sc, owner, core.ProjectInput{Name: "before"})
		projects := &core.ProjectService{DB: db}
		var names []string
		svc := &core.TaskService{DB: db, Hooks: core.ValidationHooks{Runner: funcRunner(
			func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error) {
				names = append(names, req.Project.Name)
				if len(names) == 1 {
					name := "after"
					if _, err := projects.Update(ctx, sc, owner, p.ID, p.Version, core.ProjectUpdate{Name: &name}); err != nil {
						return core.Verdict{}, err
					}
				}
				return core.Verdict{Allowed: true}, nil
			})}}
		if _, err := svc.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "t"}); err != nil {
			t.Fatal(err)
		}
		if strings.Join(names, ",") != "before,after" {
			t.Fatalf("project names seen by the hook: %v", names)
		}
	})

	t.Run("TaskChangedDuringItsHookIs412", func(t *testing.T) {
		p := newProject(t, db, sc, owner, core.ProjectInput{})
		plain := &core.TaskService{DB: db}
		task, err := plain.Create(ctx, sc, owner, p.ID, core.TaskInput{Title: "t"})
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		svc := &core.TaskService{DB: db, Hooks: core.ValidationHooks{Runner: funcRunner(
			func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error) {
				calls++
				title := "someone else's"
				_, err := plain.Update(ctx, sc, owner, p.ID, task.ID, task.Version, core.TaskUpdate{Title: &title})
				return core.Verdict{Allowed: true}, err
			})}}
		title := "mine"
		_, err = svc.Update(ctx, sc, owner, p.ID, task.ID, task.Version, core.TaskUpdate{Title: &title})
		wantCode(t, err, core.EPRECONDITION)
		got, err := plain.Get(ctx, sc, p.ID, task.ID)
		if err != nil || got.Title != "someone else's" || calls != 1 {
			t.Fatalf("task %+v after a stale update (hook ran %d times): %v", got, calls, err)
		}
	})

	t.Run("UploadConflictsWhenMetadataChangedDuringIt", func(t *testing.T) {
		p := newProject(t, db, sc, owner, core.ProjectInput{})
		bucket, err := storage.OpenBucket(ctx, "mem://")
		if err != nil {
			t.Fatal(err)
		}
		defer bucket.Close()
		plain := &core.DocumentService{DB: db, Bucket: bucket, Registry: tenant.NewRegistry(db, nil),
			Defaults: tenant.StorageSettings{QuotaBytes: 1 << 30, MaxFileBytes: 1 << 20}}
		doc, err := plain.Create(ctx, sc, owner, p.ID, core.Upload{Title: "d", Metadata: `{"locked":false}`, Body: strings.NewReader("v1"), DeclaredBytes: 2})
		if err != nil {
			t.Fatal(err)
		}
		guarded := *plain
		guarded.Hooks = core.ValidationHooks{Runner: funcRunner(func(ctx context.Context, req core.ValidationRequest) (core.Verdict, error) {
			if req.Operation == core.OpAddVersion { // someone locks the document while the bytes stream
				locked := core.RawJSON(`{"locked":true}`)
				if _, err := plain.Update(ctx, sc, owner, doc.ID, doc.RowVersion, core.DocumentUpdate{Metadata: &locked}); err != nil {
					return core.Verdict{}, err
				}
			}
			return core.Verdict{Allowed: true}, nil
		})}
		_, err = guarded.AddVersion(ctx, sc, owner, doc.ID, core.Upload{Filename: "v2.txt", Body: bytes.NewReader([]byte("v2")), DeclaredBytes: 2})
		wantCode(t, err, core.ECONFLICT)
		got, err := plain.Get(ctx, sc, doc.ID)
		if err != nil || got.Version != 1 || string(got.Metadata) != `{"locked": true}` {
			t.Fatalf("document after the refused version: %+v %v", got, err)
		}
		var keys []string
		storage.ListPrefix(ctx, bucket, storage.TenantPrefix(sc.ID), func(k string, _ int64, _ time.Time) error {
			keys = append(keys, k)
			return nil
		})
		if len(keys) != 1 {
			t.Fatalf("blobs after the refused version: %v", keys)
		}
	})
}

func budgetGuard(t testing.TB, db *gorm.DB, tenantID uuid.UUID, maxBudget int64) *plugins.Registry {
	t.Helper()
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join("..", "examples", "plugins", "budget-guard", "budget-guard.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	host, err := plugins.NewHost(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(context.Background()) })
	reg := plugins.NewRegistry(db, host, nil, &plugins.RegistryOptions{SecretKey: []byte("test-only-secret-key-for-budget-guard")})
	t.Cleanup(func() { reg.Close(context.Background()) })
	_, _, err = reg.Upload(ctx, tenantID, core.Actor{}, wasm, plugins.Manifest{Name: "budget-guard",
		Hooks: []string{"project.validate", "expense.validate"}, Config: []byte(fmt.Sprintf(`{"max_budget_minor": %d}`, maxBudget))})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// budget-guard (the real Wasm example) cannot be bypassed by concurrency:
// expenses that each fit the budget alone, sent at once, are committed only
// while together they fit, whether they go through one process (its queue)
// or two replicas racing on the same project (the transaction's re-check).
func TestBudgetGuardHoldsUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	hooks := core.ValidationHooks{Runner: budgetGuard(t, db, tn.ID, 1_000_000)}
	today := core.DateOf(time.Now())

	cases := []struct {
		name     string
		replicas []*core.ExpenseService
	}{
		{"OneProcess", []*core.ExpenseService{{DB: db, Hooks: hooks, Queue: &core.WriteQueue{}}}},
		{"TwoReplicas", []*core.ExpenseService{{DB: db, Hooks: hooks, Queue: &core.WriteQueue{}}, {DB: db, Hooks: hooks, Queue: &core.WriteQueue{}}}},
		{"ThreeReplicas", []*core.ExpenseService{{DB: db, Hooks: hooks}, {DB: db, Hooks: hooks}, {DB: db, Hooks: hooks}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const planned, amount, writers = 1000, 100, 24
			p := newProject(t, db, sc, owner, core.ProjectInput{Budget: &core.Money{AmountMinor: planned, Currency: "EUR"}})
			var wg sync.WaitGroup
			errs := make([]error, writers)
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					svc := tc.replicas[i%len(tc.replicas)]
					_, errs[i] = svc.Create(ctx, sc, owner, p.ID, core.ExpenseInput{AmountMinor: amount, Currency: "EUR", SpentOn: today})
				}()
			}
			wg.Wait()
			ok, rejected, conflicts := 0, 0, 0
			for _, err := range errs {
				switch core.ErrorCode(err) {
				case "":
					ok++
				case core.EPLUGINREJECTED:
					rejected++
				case core.ECONFLICT:
					conflicts++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}
			var total int64
			if err := db.Raw("SELECT coalesce(sum(amount_minor), 0) FROM "+sc.Table("expenses")+" WHERE project_id = ?", p.ID).Scan(&total).Error; err != nil {
				t.Fatal(err)
			}
			t.Logf("%d committed, %d rejected by budget-guard, %d conflicts", ok, rejected, conflicts)
			if total > planned || total != int64(ok*amount) {
				t.Fatalf("spent %d with %d expenses committed: the budget of %d was overrun", total, ok, planned)
			}
			if rejected == 0 {
				t.Fatal("budget-guard rejected nothing")
			}
			if len(tc.replicas) == 1 && (ok != planned/amount || conflicts != 0) {
				t.Fatalf("one process: %d committed, %d conflicts; want exactly %d and none", ok, conflicts, planned/amount)
			}
		})
	}
}

// A fail_closed plugin that cannot get a call slot within the slot wait
// (here: the tenant's only slot is held by a looping plugin call) answers
// EUNAVAILABLE (503), not a rejection and not a hang; a fail_open one is
// skipped and the change goes through.
func TestBusyPluginAnswers503(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	tn, owner := workTenant(t, db)
	sc := tn.Scope()
	host, err := plugins.NewHost(ctx, &plugins.Options{TenantConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(context.Background()) })
	reg := plugins.NewRegistry(db, host, nil, &plugins.RegistryOptions{SlotWait: 200 * time.Millisecond,
		SecretKey: []byte("test-only-secret-key-for-busy-plugins")})
	t.Cleanup(func() { reg.Close(context.Background()) })
	wasm, err := os.ReadFile(filepath.Join("..", "plugins", "testdata", "loop.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	info, _, err := reg.Upload(ctx, tn.ID, core.Actor{}, wasm, plugins.Manifest{Name: "loop", Hooks: []string{"project.validate"}, TimeoutMS: 1500})
	if err != nil {
		t.Fatal(err)
	}
	projects := &core.ProjectService{DB: db, Hooks: core.ValidationHooks{Runner: reg}}
	for _, policy := range []string{plugins.FailClosed, plugins.FailOpen} {
		t.Run(policy, func(t *testing.T) {
			p := policy
			if info, err = reg.Update(ctx, tn.ID, core.Actor{}, info.ID, info.Revision, plugins.PluginUpdate{FailurePolicy: &p}); err != nil {
				t.Fatal(err)
			}
			first := make(chan error, 1)
			go func() { // holds the tenant's only slot until the plugin's deadline
				_, err := projects.Create(ctx, sc, owner, core.ProjectInput{Key: "H" + strings.ToUpper(uuid.NewString()[:6]), Name: "holder"})
				first <- err
			}()
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			_, err := projects.Create(ctx, sc, owner, core.ProjectInput{Key: "W" + strings.ToUpper(uuid.NewString()[:6]), Name: "waiter"})
			waited := time.Since(start)
			holder := <-first
			if waited > time.Second {
				t.Fatalf("the waiter took %v: the slot wait is 200ms", waited)
			}
			if policy == plugins.FailClosed {
				wantCode(t, err, core.EUNAVAILABLE)
				wantCode(t, holder, core.EPLUGINREJECTED) // the looping plugin timed out: its own failure
			} else if err != nil || holder != nil {
				t.Fatalf("fail_open: waiter %v, holder %v; want both created", err, holder)
			}
		})
	}
}
