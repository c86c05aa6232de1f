package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"
)

// Delivery is one event handed to one consumer.
type Delivery struct {
	Event    Event
	TenantID uuid.UUID
	Consumer string
	Attempt  int
	// Key identifies this (event, consumer) pair: consumers use it as the
	// idempotency key of whatever they do, so a redelivery after a crash
	// has no second effect.
	Key string
	// leaseEnd is when this process must assume the claim's lease ended
	// (the claim started no earlier than the moment before the query).
	leaseEnd time.Time
	// claim is this claim's token: the outcome is recorded only while the
	// delivery is still under this claim.
	claim uuid.UUID
}

// Consumer handles outbox events. A returned error is retried with backoff.
type Consumer interface {
	Handle(ctx context.Context, d Delivery) error
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc func(ctx context.Context, d Delivery) error

func (f ConsumerFunc) Handle(ctx context.Context, d Delivery) error { return f(ctx, d) }

// OutboxWorker claims pending deliveries with FOR UPDATE SKIP LOCKED under a
// lease, hands them to their consumer, and acknowledges, retries with
// exponential backoff, or parks them after MaxAttempts. Several workers can
// run at once; a worker that dies between claim and ack loses nothing: its
// lease expires and another worker delivers.
type OutboxWorker struct {
	DB        *gorm.DB
	Consumers map[string]Consumer
	// ListenURL, if set, is a PostgreSQL URL used to LISTEN for new events.
	ListenURL string
	// Lease is how long a claim is exclusive (default 60s). A handler's
	// context ends before its lease does.
	Lease time.Duration
	// MaxAttempts before an event is parked (default 8).
	MaxAttempts int
	// Batch is the number of deliveries claimed at once (default 20).
	Batch int
	// Poll is the fallback polling interval (default 2s).
	Poll time.Duration
	// Backoff returns the delay after the n-th failed attempt (default
	// 2^n seconds, capped at 1h).
	Backoff func(attempt int) time.Duration
}

func (w *OutboxWorker) defaults() {
	if w.Lease <= 0 {
		w.Lease = 60 * time.Second
	}
	if w.MaxAttempts <= 0 {
		w.MaxAttempts = 8
	}
	if w.Batch <= 0 {
		w.Batch = 20
	}
	if w.Poll <= 0 {
		w.Poll = 2 * time.Second
	}
	if w.Backoff == nil {
		w.Backoff = func(n int) time.Duration {
			return min(time.Duration(1<<min(n, 12))*time.Second, time.Hour)
		}
	}
}

// Run processes deliveries until ctx ends. It stops claiming at once when ctx
// ends; a delivery in progress finishes within its own deadline.
func (w *OutboxWorker) Run(ctx context.Context) error {
	w.defaults()
	wake := make(chan struct{}, 1)
	if w.ListenURL != "" {
		go w.listen(ctx, wake)
	}
	for {
		n, err := w.ProcessOnce(ctx)
		if err != nil && ctx.Err() == nil {
			slog.ErrorContext(ctx, "outbox batch failed", "err", err)
		}
		if n > 0 && err == nil {
			continue // there may be more
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-time.After(w.Poll):
		}
	}
}

func (w *OutboxWorker) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		conn, err := pgx.Connect(ctx, w.ListenURL)
		if err == nil {
			if _, err = conn.Exec(ctx, "LISTEN promanage_outbox"); err == nil {
				for {
					if _, err = conn.WaitForNotification(ctx); err != nil {
						break
					}
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
			conn.Close(context.Background())
		}
		if ctx.Err() != nil {
			return
		}
		slog.WarnContext(ctx, "outbox listen failed; polling", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

type claimed struct {
	EventID  uuid.UUID `gorm:"column:event_id"`
	Consumer string    `gorm:"column:consumer"`
	Attempts int       `gorm:"column:attempts"`
	Token    uuid.UUID `gorm:"column:claim_token"`
}

// Claim takes up to Batch due deliveries under a lease.
func (w *OutboxWorker) Claim(ctx context.Context) ([]Delivery, error) {
	w.defaults()
	leaseEnd := time.Now().Add(w.Lease)
	var rows []claimed
	err := w.DB.WithContext(ctx).Raw(`UPDATE public.outbox_deliveries d
		SET locked_until = now() + make_interval(secs => ?), attempts = d.attempts + 1, claim_token = gen_random_uuid()
		FROM (SELECT event_id, consumer FROM public.outbox_deliveries
		      WHERE state = 'pending' AND next_attempt_at <= now() AND (locked_until IS NULL OR locked_until < now())
		      ORDER BY next_attempt_at LIMIT ? FOR UPDATE SKIP LOCKED) c
		WHERE d.event_id = c.event_id AND d.consumer = c.consumer
		RETURNING d.event_id, d.consumer, d.attempts, d.claim_token`, w.Lease.Seconds(), w.Batch).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("claim outbox: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		ids[i] = r.EventID
	}
	var evs []struct {
		ID         uuid.UUID  `gorm:"column:id"`
		TenantID   uuid.UUID  `gorm:"column:tenant_id"`
		Type       string     `gorm:"column:type"`
		SubjectID  string     `gorm:"column:subject_id"`
		ActorID    *uuid.UUID `gorm:"column:actor_id"`
		Payload    string     `gorm:"column:payload"`
		OccurredAt time.Time  `gorm:"column:occurred_at"`
	}
	if err := w.DB.WithContext(ctx).Raw("SELECT id, tenant_id, type, subject_id, actor_id, payload::text AS payload, occurred_at FROM public.outbox WHERE id IN ?", ids).Scan(&evs).Error; err != nil {
		return nil, fmt.Errorf("load outbox events: %w", err)
	}
	byID := map[uuid.UUID]int{}
	for i, e := range evs {
		byID[e.ID] = i
	}
	out := make([]Delivery, 0, len(rows))
	for _, r := range rows {
		i, ok := byID[r.EventID]
		if !ok {
			continue
		}
		e := evs[i]
		out = append(out, Delivery{
			Event:    Event{ID: e.ID, Type: e.Type, SubjectID: e.SubjectID, ActorID: e.ActorID, Payload: json.RawMessage(e.Payload), OccurredAt: e.OccurredAt.UTC()},
			TenantID: e.TenantID, Consumer: r.Consumer, Attempt: r.Attempts, Key: e.ID.String() + ":" + r.Consumer,
			leaseEnd: leaseEnd, claim: r.Token,
		})
	}
	return out, nil
}

// ProcessOnce claims one batch and handles it; it returns how many it claimed.
func (w *OutboxWorker) ProcessOnce(ctx context.Context) (int, error) {
	ds, err := w.Claim(ctx)
	if err != nil {
		return 0, err
	}
	for _, d := range ds {
		w.handle(ctx, d)
	}
	return len(ds), nil
}

func (w *OutboxWorker) handle(ctx context.Context, d Delivery) {
	c, ok := w.Consumers[d.Consumer]
	var err error
	if !ok {
		err = fmt.Errorf("no consumer %q in this worker", d.Consumer)
	} else {
		// The handler must end well inside the claim's lease, which started
		// with the batch, not with this delivery: a delivery handled after
		// its lease ran out could be claimed and handled by another worker
		// at the same time. One that has too little lease left is handed
		// back, uncounted, for the next claim.
		deadline := time.Now().Add(w.Lease * 3 / 4)
		if !d.leaseEnd.IsZero() {
			deadline = d.leaseEnd.Add(-w.Lease / 4)
		}
		if time.Until(deadline) < w.Lease/10 {
			if err := w.release(context.WithoutCancel(ctx), d); err != nil {
				slog.ErrorContext(ctx, "release outbox delivery", "event_id", d.Event.ID, "consumer", d.Consumer, "err", err)
			}
			return
		}
		hctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		err = safeHandle(hctx, c, d)
		cancel()
	}
	if err := w.Settle(context.WithoutCancel(ctx), d, err); err != nil {
		slog.ErrorContext(ctx, "settle outbox delivery", "event_id", d.Event.ID, "consumer", d.Consumer, "err", err)
	}
}

func safeHandle(ctx context.Context, c Consumer, d Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("consumer panicked: %v", r)
		}
	}()
	return c.Handle(ctx, d)
}

// Settle records the outcome of a claimed delivery. The update is fenced by
// the claim's token, so a worker whose lease expired cannot overwrite the
// outcome of the worker that took over (nor of a claim made after a replay).
func (w *OutboxWorker) Settle(ctx context.Context, d Delivery, herr error) error {
	w.defaults()
	db := w.DB.WithContext(ctx)
	if herr == nil {
		return db.Exec(`UPDATE public.outbox_deliveries SET state = 'delivered', delivered_at = now(), locked_until = NULL, last_error = ''
			WHERE event_id = ? AND consumer = ? AND claim_token = ? AND state = 'pending'`, d.Event.ID, d.Consumer, d.claim).Error
	}
	msg := herr.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	if d.Attempt >= w.MaxAttempts || errors.Is(herr, ErrPermanent) {
		slog.WarnContext(ctx, "outbox delivery parked", "event_id", d.Event.ID, "consumer", d.Consumer, "attempts", d.Attempt, "err", herr)
		return db.Exec(`UPDATE public.outbox_deliveries SET state = 'parked', locked_until = NULL, last_error = ?
			WHERE event_id = ? AND consumer = ? AND claim_token = ? AND state = 'pending'`, msg, d.Event.ID, d.Consumer, d.claim).Error
	}
	return db.Exec(`UPDATE public.outbox_deliveries SET locked_until = NULL, last_error = ?, next_attempt_at = now() + make_interval(secs => ?)
		WHERE event_id = ? AND consumer = ? AND claim_token = ? AND state = 'pending'`, msg, w.Backoff(d.Attempt).Seconds(), d.Event.ID, d.Consumer, d.claim).Error
}

// release hands back a claimed delivery that was not handled: its lease
// ends now and the claim does not count as an attempt.
func (w *OutboxWorker) release(ctx context.Context, d Delivery) error {
	return w.DB.WithContext(ctx).Exec(`UPDATE public.outbox_deliveries SET locked_until = NULL, attempts = attempts - 1
		WHERE event_id = ? AND consumer = ? AND claim_token = ? AND state = 'pending'`, d.Event.ID, d.Consumer, d.claim).Error
}

// ErrPermanent marks a consumer error that retrying cannot fix: the delivery
// is parked at once.
var ErrPermanent = errors.New("permanent failure")
