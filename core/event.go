package core

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Event types.
const (
	EventProjectCreated      = "project.created"
	EventProjectUpdated      = "project.updated"
	EventProjectDeleted      = "project.deleted"
	EventProjectCompleted    = "project.completed"
	EventProjectOverdue      = "project.overdue"
	EventTaskDone            = "task.done"
	EventExpenseRecorded     = "expense.recorded"
	EventMemberAdded         = "member.added"
	EventMemberRemoved       = "member.removed"
	EventDocumentUploaded    = "document.uploaded"
	EventBudgetThreshold     = "budget.threshold_crossed"
	EventDeadlineApproaching = "deadline.approaching"
	EventExpenseDeleted      = "expense.deleted"
)

// EventSink writes domain events into the transactional outbox
// (public.outbox), with one delivery row per consumer, in the transaction of
// the change. The zero value writes events with no consumers (they are still
// listed by the events API).
type EventSink struct {
	// Consumers are the names of the worker's consumers that get every event.
	Consumers []string
}

// Event is an outbox row as the events API shows it.
type Event struct {
	ID         uuid.UUID       `json:"id"`
	Type       string          `json:"type"`
	SubjectID  string          `json:"subject_id"`
	ActorID    *uuid.UUID      `json:"actor_id"`
	Payload    json.RawMessage `json:"data"`
	OccurredAt time.Time       `json:"occurred_at"`
}

func (s EventSink) emit(tx *gorm.DB, sc tenant.Scope, actor Actor, typ, subject string, data any) error {
	_, err := s.Emit(tx, sc.ID, actor.UserID, typ, subject, "", data)
	return err
}

// Emit inserts one event in tx. A non-empty dedupeKey makes the insert a
// no-op when an event with that key exists (inserted reports which).
func (s EventSink) Emit(tx *gorm.DB, tenantID, actorID uuid.UUID, typ, subject, dedupeKey string, data any) (inserted bool, err error) {
	id, err := uuid.NewV7()
	if err != nil {
		return false, err
	}
	payload, err := json.Marshal(data)
	if err != nil {
		return false, fmt.Errorf("emit %s: %w", typ, err)
	}
	var actor *uuid.UUID
	if actorID != uuid.Nil {
		actor = &actorID
	}
	var dk *string
	if dedupeKey != "" {
		dk = &dedupeKey
	}
	// One round trip (it runs inside the caller's transaction, often with
	// a row lock held): the event, one delivery per consumer, and a NOTIFY
	// that wakes the workers when the transaction commits, all only if the
	// dedupe key was new.
	var ids []uuid.UUID
	err = tx.Raw(`WITH e AS (
			INSERT INTO public.outbox (id, tenant_id, type, subject_id, actor_id, payload, dedupe_key, occurred_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, now()) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id
		), d AS (
			INSERT INTO public.outbox_deliveries (event_id, consumer) SELECT e.id, c FROM e CROSS JOIN unnest(?::text[]) AS c
		)
		SELECT e.id FROM e, pg_notify('promanage_outbox', '')`,
		id, tenantID, typ, subject, actor, string(payload), dk, textArray(s.Consumers)).Scan(&ids).Error
	if err != nil {
		return false, fmt.Errorf("emit %s: %w", typ, err)
	}
	if len(ids) == 0 {
		return false, nil
	}
	return true, nil
}

// textArray is a PostgreSQL text[] literal of names from the code.
func textArray(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(n) + `"`
	}
	return "{" + strings.Join(quoted, ",") + "}"
}
