package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// The outbox worker claims every due delivery of the database, whatever its
// tenant or consumer. Tests of the worker therefore run on a database of
// their own (promanage_test_outbox), so that workers of other test packages
// and the deliveries they leave behind cannot interfere.
var (
	outboxDBOnce sync.Once
	outboxDB     *gorm.DB
	outboxDBErr  error
)

func isolatedOutboxDB(t *testing.T) *gorm.DB {
	t.Helper()
	shared := testenv.DB(t)
	outboxDBOnce.Do(func() {
		const name = "promanage_test_outbox"
		ctx := context.Background()
		var exists bool
		if outboxDBErr = shared.Raw("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = ?)", name).Scan(&exists).Error; outboxDBErr != nil {
			return
		}
		if !exists {
			if err := shared.Exec("CREATE DATABASE " + name).Error; err != nil {
				var again bool
				shared.Raw("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = ?)", name).Scan(&again)
				if !again {
					outboxDBErr = err
					return
				}
			}
		}
		u, err := url.Parse(testenv.DatabaseURL())
		if err != nil {
			outboxDBErr = err
			return
		}
		u.Path = "/" + name
		if outboxDB, outboxDBErr = tenant.OpenDB(ctx, u.String(), nil); outboxDBErr != nil {
			return
		}
		outboxDBErr = tenant.MigratePublic(ctx, outboxDB)
	})
	if outboxDBErr != nil {
		t.Fatalf("outbox test database: %v", outboxDBErr)
	}
	return outboxDB
}

// recorder is a consumer that records every delivery of one tenant by its
// idempotency key.
type recorder struct {
	tenant uuid.UUID
	mu     sync.Mutex
	seen   map[string]int
	fail   error
}

func newRecorder(tenantID uuid.UUID) *recorder {
	return &recorder{tenant: tenantID, seen: map[string]int{}}
}

func (r *recorder) Handle(ctx context.Context, d core.Delivery) error {
	if d.TenantID != r.tenant {
		return nil // left over from an earlier run: accept and forget
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.seen[d.Key]++
	return nil
}

func (r *recorder) setFail(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

func (r *recorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}

var outboxConsumers = []string{"alpha", "beta"}

func consumersOf(r *recorder) map[string]core.Consumer {
	return map[string]core.Consumer{"alpha": r, "beta": r}
}

// emitEvents writes n events of tenantID, each for both consumers, and
// returns their delivery keys.
func emitEvents(t *testing.T, db *gorm.DB, tenantID uuid.UUID, n int) []string {
	t.Helper()
	sink := core.EventSink{Consumers: outboxConsumers}
	var ids []uuid.UUID
	err := db.Transaction(func(tx *gorm.DB) error {
		for i := range n {
			if _, err := sink.Emit(tx, tenantID, uuid.Nil, "test.event", fmt.Sprint(i), "", map[string]int{"i": i}); err != nil {
				return err
			}
			var row struct{ ID uuid.UUID }
			if err := tx.Raw("SELECT id FROM public.outbox WHERE tenant_id = ? AND subject_id = ? ORDER BY id DESC LIMIT 1", tenantID, fmt.Sprint(i)).Scan(&row).Error; err != nil {
				return err
			}
			ids = append(ids, row.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, id := range ids {
		for _, c := range outboxConsumers {
			keys = append(keys, id.String()+":"+c)
		}
	}
	return keys
}

// drain delivers whatever earlier runs left due, so a test starts clean.
func drain(t *testing.T, db *gorm.DB) {
	t.Helper()
	w := &core.OutboxWorker{DB: db, Consumers: consumersOf(newRecorder(uuid.New())), Batch: 200}
	for {
		n, err := w.ProcessOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

type deliveryRow struct {
	Consumer  string
	State     string
	Attempts  int
	LastError string
}

func deliveriesOf(t *testing.T, db *gorm.DB, tenantID uuid.UUID) []deliveryRow {
	t.Helper()
	var rows []deliveryRow
	if err := db.Raw(`SELECT d.consumer, d.state, d.attempts, d.last_error FROM public.outbox_deliveries d
		JOIN public.outbox o ON o.id = d.event_id WHERE o.tenant_id = ? ORDER BY o.id, d.consumer`, tenantID).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	return rows
}

// A worker that claims deliveries and dies before settling them loses
// nothing: once its lease expires another worker delivers them, and the
// dead worker's late acknowledgement is fenced off.
func TestOutboxKilledWorkerLosesNoEvent(t *testing.T) {
	db := isolatedOutboxDB(t)
	drain(t, db)
	ctx := context.Background()
	tenantID := uuid.New()
	keys := emitEvents(t, db, tenantID, 5)
	rec := newRecorder(tenantID)

	doomed := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), Lease: time.Second, Batch: 100}
	claimed, err := doomed.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mine := 0
	for _, d := range claimed {
		if d.TenantID == tenantID {
			mine++
		}
	}
	if mine != len(keys) {
		t.Fatalf("claimed %d of %d deliveries", mine, len(keys))
	}
	// ... and the process dies here, without handling or settling.

	survivor := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), Lease: 10 * time.Second, Batch: 100}
	if n, err := survivor.ProcessOnce(ctx); err != nil || n != 0 {
		t.Fatalf("claimed %d deliveries still under lease (%v)", n, err)
	}
	time.Sleep(1200 * time.Millisecond)
	if _, err := survivor.ProcessOnce(ctx); err != nil {
		t.Fatal(err)
	}
	got := rec.snapshot()
	for _, k := range keys {
		if got[k] != 1 {
			t.Errorf("delivery %s handled %d times, want 1", k, got[k])
		}
	}
	// The dead worker comes back and acknowledges with its stale attempt
	// number as a failure: the fence keeps the survivor's outcome.
	for _, d := range claimed {
		if err := doomed.Settle(ctx, d, errors.New("stale")); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range deliveriesOf(t, db, tenantID) {
		if d.State != core.DeliveryDelivered || d.Attempts != 2 || d.LastError != "" {
			t.Errorf("delivery after takeover: %+v", d)
		}
	}
}

// Two workers in parallel deliver each event exactly once per consumer.
func TestOutboxParallelWorkersDeliverExactlyOnce(t *testing.T) {
	db := isolatedOutboxDB(t)
	drain(t, db)
	tenantID := uuid.New()
	rec := newRecorder(tenantID)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 2 {
		w := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), Batch: 7, Poll: 20 * time.Millisecond}
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	// Events arrive while the workers run.
	keys := emitEvents(t, db, tenantID, 100)
	keys = append(keys, emitEvents(t, db, tenantID, 100)...)
	deadline := time.Now().Add(30 * time.Second)
	for len(rec.snapshot()) < len(keys) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	cancel()
	wg.Wait()
	got := rec.snapshot()
	if len(keys) != 400 {
		t.Fatalf("%d keys", len(keys))
	}
	for _, k := range keys {
		if got[k] != 1 {
			t.Errorf("delivery %s handled %d times, want 1", k, got[k])
		}
	}
	if len(got) != len(keys) {
		t.Errorf("%d distinct deliveries handled, want %d", len(got), len(keys))
	}
	for _, d := range deliveriesOf(t, db, tenantID) {
		if d.State != core.DeliveryDelivered || d.Attempts != 1 {
			t.Fatalf("delivery %+v", d)
		}
	}
}

// A failing consumer is retried with backoff, parked after MaxAttempts, and
// an operator's replay re-queues it.
func TestOutboxBackoffParkingAndReplay(t *testing.T) {
	db := isolatedOutboxDB(t)
	drain(t, db)
	ctx := context.Background()
	tn, owner := workTenant(t, db)
	keys := emitEvents(t, db, tn.ID, 1)
	rec := newRecorder(tn.ID)
	rec.setFail(errors.New("webhook answered 503"))
	var backoffs []int
	var mu sync.Mutex
	w := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), MaxAttempts: 3, Backoff: func(n int) time.Duration {
		mu.Lock()
		backoffs = append(backoffs, n)
		mu.Unlock()
		return time.Duration(n) * 300 * time.Millisecond
	}}
	process := func() {
		t.Helper()
		if _, err := w.ProcessOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	process()
	ds := deliveriesOf(t, db, tn.ID)
	if len(ds) != 2 || ds[0].State != core.DeliveryPending || ds[0].Attempts != 1 || ds[0].LastError != "webhook answered 503" {
		t.Fatalf("after one failure: %+v", ds)
	}
	process() // not due yet: backoff
	if ds := deliveriesOf(t, db, tn.ID); ds[0].Attempts != 1 {
		t.Fatalf("retried before its backoff: %+v", ds)
	}
	time.Sleep(350 * time.Millisecond)
	process()
	if ds := deliveriesOf(t, db, tn.ID); ds[0].Attempts != 2 || ds[0].State != core.DeliveryPending {
		t.Fatalf("second attempt: %+v", ds)
	}
	time.Sleep(650 * time.Millisecond)
	process()
	for _, d := range deliveriesOf(t, db, tn.ID) {
		if d.State != core.DeliveryParked || d.Attempts != 3 {
			t.Fatalf("after MaxAttempts: %+v", d)
		}
	}
	mu.Lock()
	if len(backoffs) < 4 || backoffs[0] != 1 || backoffs[len(backoffs)-1] != 2 {
		t.Errorf("backoff called with %v", backoffs)
	}
	mu.Unlock()

	// The events API shows it parked; replay re-queues both deliveries.
	events := &core.EventService{DB: db}
	page, err := events.List(ctx, tn.ID, core.EventFilter{State: core.DeliveryParked})
	if err != nil || len(page.Items) != 1 || len(page.Items[0].Deliveries) != 2 || page.Items[0].Deliveries[0].LastError == "" {
		t.Fatalf("parked events: %+v %v", page, err)
	}
	id := page.Items[0].ID
	rec.setFail(nil)
	e, n, err := events.Replay(ctx, tn.Scope(), owner, id)
	if err != nil || n != 2 || e.Deliveries[0].State != core.DeliveryPending || e.Deliveries[0].Attempts != 0 {
		t.Fatalf("replay: %+v %d %v", e, n, err)
	}
	_, _, err = events.Replay(ctx, tn.Scope(), owner, uuid.New())
	wantCode(t, err, core.ENOTFOUND)
	other, otherOwner := workTenant(t, db)
	_, _, err = events.Replay(ctx, other.Scope(), otherOwner, id)
	wantCode(t, err, core.ENOTFOUND) // another tenant's event
	process()
	for _, d := range deliveriesOf(t, db, tn.ID) {
		if d.State != core.DeliveryDelivered || d.Attempts != 1 {
			t.Fatalf("after replay: %+v", d)
		}
	}
	if got := rec.snapshot(); got[keys[0]] != 1 || got[keys[1]] != 1 {
		t.Fatalf("deliveries after replay: %v", got)
	}
	var audits int64
	db.Table(tn.Scope().Table("audit_log")).Where("action = 'event.replay' AND object_id = ?", id.String()).Count(&audits)
	if audits != 1 {
		t.Fatalf("%d audit rows for the replay", audits)
	}
}

// overlapConsumer blocks each delivery of one tenant until its context ends
// and notes any delivery handled by two workers at the same time.
type overlapConsumer struct {
	tenant  uuid.UUID
	mu      sync.Mutex
	active  map[string]int
	overlap []string
	done    map[string]int
}

func (o *overlapConsumer) Handle(ctx context.Context, d core.Delivery) error {
	if d.TenantID != o.tenant {
		return nil
	}
	o.mu.Lock()
	o.active[d.Key]++
	if o.active[d.Key] > 1 {
		o.overlap = append(o.overlap, d.Key)
	}
	o.mu.Unlock()
	<-ctx.Done()
	o.mu.Lock()
	o.active[d.Key]--
	o.done[d.Key]++
	o.mu.Unlock()
	return nil
}

// The deliveries of one claimed batch share one lease: a delivery handled
// late in the batch must not run past it, or another worker claims and
// handles it at the same time.
func TestOutboxBatchNeverOutlivesItsLease(t *testing.T) {
	db := isolatedOutboxDB(t)
	drain(t, db)
	ctx := context.Background()
	tenantID := uuid.New()
	keys := emitEvents(t, db, tenantID, 1) // two deliveries: alpha and beta
	oc := &overlapConsumer{tenant: tenantID, active: map[string]int{}, done: map[string]int{}}
	consumers := map[string]core.Consumer{"alpha": oc, "beta": oc}

	first := &core.OutboxWorker{DB: db, Consumers: consumers, Lease: time.Second, Batch: 10}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := first.ProcessOnce(ctx); err != nil {
			t.Error(err)
		}
	}()
	// Once the batch's lease has run out, a second worker claims what is
	// claimable.
	time.Sleep(1200 * time.Millisecond)
	second := &core.OutboxWorker{DB: db, Consumers: consumers, Lease: time.Second, Batch: 10}
	if _, err := second.ProcessOnce(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if len(oc.overlap) > 0 {
		t.Fatalf("deliveries handled by two workers at once: %v", oc.overlap)
	}
	for _, k := range keys {
		if oc.done[k] != 1 {
			t.Errorf("delivery %s handled %d times, want 1", k, oc.done[k])
		}
	}
	for _, d := range deliveriesOf(t, db, tenantID) {
		if d.State != core.DeliveryDelivered || d.Attempts != 1 {
			t.Errorf("delivery %+v, want delivered at attempt 1", d)
		}
	}
}

// A worker stalled past its lease cannot record an outcome over a later
// claim even after a replay reset the attempt count to what it holds: the
// fence is the claim's token, not the attempt number.
func TestOutboxStaleClaimCannotSettleAfterReplay(t *testing.T) {
	db := isolatedOutboxDB(t)
	drain(t, db)
	ctx := context.Background()
	tenantID := uuid.New()
	emitEvents(t, db, tenantID, 1)
	rec := newRecorder(tenantID)

	stalled := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), Lease: time.Second, Batch: 100}
	old, err := stalled.Claim(ctx) // attempt 1, then it stalls
	if err != nil || len(old) == 0 {
		t.Fatalf("claim: %v %d", err, len(old))
	}
	time.Sleep(1200 * time.Millisecond)
	survivor := &core.OutboxWorker{DB: db, Consumers: consumersOf(rec), Lease: 10 * time.Second, Batch: 100}
	if _, err := survivor.ProcessOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// An operator replays the event (what EventService.Replay does to its rows).
	if err := db.Exec(`UPDATE public.outbox_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
		locked_until = NULL, last_error = '', delivered_at = NULL, claim_token = NULL
		WHERE event_id IN (SELECT id FROM public.outbox WHERE tenant_id = ?)`, tenantID).Error; err != nil {
		t.Fatal(err)
	}
	current, err := survivor.Claim(ctx) // attempt 1 again, a new claim
	if err != nil || len(current) != len(old) {
		t.Fatalf("claim after replay: %v %d", err, len(current))
	}
	for _, d := range old {
		if d.TenantID == tenantID {
			if err := stalled.Settle(ctx, d, errors.New("stale outcome")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range deliveriesOf(t, db, tenantID) {
		if d.State != "pending" || d.LastError != "" {
			t.Fatalf("the stale claim settled over the current one: %+v", d)
		}
	}
	for _, d := range current {
		if d.TenantID == tenantID {
			if err := survivor.Settle(ctx, d, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range deliveriesOf(t, db, tenantID) {
		if d.State != core.DeliveryDelivered {
			t.Fatalf("the current claim could not settle: %+v", d)
		}
	}
}
