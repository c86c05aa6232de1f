package core

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Delivery states of the outbox.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryParked    = "parked"
)

// DeliveryStates lists the delivery states.
var DeliveryStates = []string{DeliveryPending, DeliveryDelivered, DeliveryParked}

// DeliveryStatus is the state of one event's delivery to one consumer.
type DeliveryStatus struct {
	Consumer      string     `json:"consumer"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	DeliveredAt   *time.Time `json:"delivered_at"`
	// InFlight is true while a worker holds the delivery under its lease.
	InFlight bool `json:"in_flight"`
}

// EventRecord is an outbox event with the state of its deliveries.
type EventRecord struct {
	Event
	Deliveries []DeliveryStatus `json:"deliveries"`
}

// EventFilter selects a tenant's events. State keeps events with at least
// one delivery in that state.
type EventFilter struct {
	Type   string
	State  string
	Limit  int
	Cursor string
}

// EventService lists a tenant's outbox events and replays them.
type EventService struct{ DB *gorm.DB }

type eventRecordRow struct {
	ID         uuid.UUID  `gorm:"column:id"`
	Type       string     `gorm:"column:type"`
	SubjectID  string     `gorm:"column:subject_id"`
	ActorID    *uuid.UUID `gorm:"column:actor_id"`
	Payload    string     `gorm:"column:payload"`
	OccurredAt time.Time  `gorm:"column:occurred_at"`
	Deliveries string     `gorm:"column:deliveries"`
}

const eventRecordSelect = `SELECT o.id, o.type, o.subject_id, o.actor_id, o.payload::text AS payload, o.occurred_at,
	coalesce((SELECT json_agg(json_build_object('consumer', d.consumer, 'state', d.state, 'attempts', d.attempts,
		'last_error', d.last_error, 'next_attempt_at', CASE WHEN d.state = 'pending' THEN d.next_attempt_at END,
		'delivered_at', d.delivered_at, 'in_flight', d.state = 'pending' AND d.locked_until > now()) ORDER BY d.consumer)
		FROM public.outbox_deliveries d WHERE d.event_id = o.id), '[]')::text AS deliveries
	FROM public.outbox o`

func (r *eventRecordRow) record() (EventRecord, error) {
	e := EventRecord{Event: Event{ID: r.ID, Type: r.Type, SubjectID: r.SubjectID, ActorID: r.ActorID,
		Payload: json.RawMessage(r.Payload), OccurredAt: r.OccurredAt.UTC()}}
	if err := json.Unmarshal([]byte(r.Deliveries), &e.Deliveries); err != nil {
		return e, fmt.Errorf("event %s deliveries: %w", r.ID, err)
	}
	for i := range e.Deliveries {
		d := &e.Deliveries[i]
		if d.NextAttemptAt != nil {
			t := d.NextAttemptAt.UTC()
			d.NextAttemptAt = &t
		}
		if d.DeliveredAt != nil {
			t := d.DeliveredAt.UTC()
			d.DeliveredAt = &t
		}
	}
	return e, nil
}

// List returns the tenant's events, newest first, each with its deliveries.
// It returns EINVALID for a bad filter.
func (s *EventService) List(ctx context.Context, tenantID uuid.UUID, f EventFilter) (*Page[EventRecord], error) {
	limit := ClampLimit(f.Limit)
	conds := []string{"o.tenant_id = ?"}
	args := []any{tenantID}
	if f.Type != "" {
		if len(f.Type) > 100 {
			return nil, Invalid(FieldError{Field: "type", Message: "must be at most 100 characters"})
		}
		conds, args = append(conds, "o.type = ?"), append(args, f.Type)
	}
	if f.State != "" {
		if !slices.Contains(DeliveryStates, f.State) {
			return nil, Invalid(FieldError{Field: "state", Message: "must be one of " + strings.Join(DeliveryStates, ", ")})
		}
		conds = append(conds, "EXISTS (SELECT 1 FROM public.outbox_deliveries x WHERE x.event_id = o.id AND x.state = ?)")
		args = append(args, f.State)
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		conds, args = append(conds, "o.id < ?"), append(args, id)
	}
	args = append(args, limit+1)
	var rows []eventRecordRow
	if err := s.DB.WithContext(ctx).Raw(eventRecordSelect+" WHERE "+strings.Join(conds, " AND ")+" ORDER BY o.id DESC LIMIT ?", args...).
		Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	items := make([]EventRecord, len(rows))
	for i := range rows {
		var err error
		if items[i], err = rows[i].record(); err != nil {
			return nil, err
		}
	}
	return pageOf(items, limit, func(e EventRecord) uuid.UUID { return e.ID }), nil
}

func (s *EventService) get(db *gorm.DB, tenantID, id uuid.UUID) (*EventRecord, error) {
	var rows []eventRecordRow
	if err := db.Raw(eventRecordSelect+" WHERE o.tenant_id = ? AND o.id = ?", tenantID, id).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("get event: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "event not found"}
	}
	e, err := rows[0].record()
	return &e, err
}

// Replay re-queues the parked and delivered deliveries of one of the tenant's
// events (state pending, attempts 0, due now) and wakes the workers; pending
// deliveries are left as they are. Consumers see the same delivery Key
// again, so an idempotent consumer can tell a replay from a new event. It
// returns the event with its deliveries and how many were re-queued, or
// ENOTFOUND if the tenant has no such event.
func (s *EventService) Replay(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID) (*EventRecord, int64, error) {
	var out *EventRecord
	var n int64
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		var ok bool
		if err := tx.Raw("SELECT EXISTS (SELECT 1 FROM public.outbox WHERE id = ? AND tenant_id = ?)", id, sc.ID).Scan(&ok).Error; err != nil {
			return err
		}
		if !ok {
			return &Error{Code: ENOTFOUND, Message: "event not found"}
		}
		res := tx.Exec(`UPDATE public.outbox_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),
			locked_until = NULL, last_error = '', delivered_at = NULL, claim_token = NULL
			WHERE event_id = ? AND state IN ('parked', 'delivered')`, id)
		if res.Error != nil {
			return res.Error
		}
		n = res.RowsAffected
		if err := RecordAudit(tx, sc, actor, "event.replay", "event", id.String(), OutcomeSuccess, map[string]any{"requeued": n}); err != nil {
			return err
		}
		if n > 0 {
			if err := tx.Exec("SELECT pg_notify('promanage_outbox', '')").Error; err != nil {
				return err
			}
		}
		var err error
		out, err = s.get(tx, sc.ID, id)
		return err
	})
	if err != nil {
		return nil, 0, domainErr("replay event", err)
	}
	return out, n, nil
}
