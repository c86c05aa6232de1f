package core

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// AuditEntry is one row of a tenant's audit log.
type AuditEntry struct {
	ID         uuid.UUID  `json:"id" gorm:"column:id"`
	At         time.Time  `json:"at" gorm:"column:at"`
	ActorID    *uuid.UUID `json:"actor_id" gorm:"column:actor_id"`
	Action     string     `json:"action" gorm:"column:action"`
	ObjectType string     `json:"object_type" gorm:"column:object_type"`
	ObjectID   string     `json:"object_id" gorm:"column:object_id"`
	Outcome    string     `json:"outcome" gorm:"column:outcome"`
	RequestID  string     `json:"request_id" gorm:"column:request_id"`
	Details    RawJSON    `json:"details" gorm:"column:details;type:jsonb"`
}

// Audit outcomes.
const (
	OutcomeSuccess = "success"
	OutcomeDenied  = "denied"
)

// RecordAudit writes an audit row in tx (the transaction of the change, so
// the change and its record commit together).
func RecordAudit(tx *gorm.DB, sc tenant.Scope, actor Actor, action, objectType, objectID, outcome string, details any) error {
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	d := []byte("{}")
	if details != nil {
		if d, err = json.Marshal(details); err != nil {
			return err
		}
	}
	var actorID *uuid.UUID
	if actor.UserID != uuid.Nil {
		actorID = &actor.UserID
	}
	err = tx.Table(sc.Table("audit_log")).Create(&AuditEntry{
		ID: id, At: time.Now().UTC(), ActorID: actorID, Action: action, ObjectType: objectType,
		ObjectID: objectID, Outcome: outcome, RequestID: actor.RequestID, Details: RawJSON(d),
	}).Error
	if err != nil {
		return fmt.Errorf("record audit: %w", err)
	}
	return nil
}

// AuditFilter selects audit entries.
type AuditFilter struct {
	ActorID    *uuid.UUID
	Action     string
	ObjectType string
	ObjectID   string
	Outcome    string
	Since      *time.Time
	Until      *time.Time
	Limit      int
	Cursor     string
}

// AuditService reads the audit log.
type AuditService struct{ DB *gorm.DB }

// Record writes one audit entry in its own statement (for denied attempts,
// which have no transaction of their own).
func (s *AuditService) Record(ctx context.Context, sc tenant.Scope, actor Actor, action, objectType, objectID, outcome string, details any) error {
	return RecordAudit(s.DB.WithContext(ctx), sc, actor, action, objectType, objectID, outcome, details)
}

// List returns audit entries, newest first.
func (s *AuditService) List(ctx context.Context, sc tenant.Scope, f AuditFilter) (*Page[AuditEntry], error) {
	limit := ClampLimit(f.Limit)
	q := s.DB.WithContext(ctx).Table(sc.Table("audit_log"))
	if f.ActorID != nil {
		q = q.Where("actor_id = ?", *f.ActorID)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.ObjectType != "" {
		q = q.Where("object_type = ?", f.ObjectType)
	}
	if f.ObjectID != "" {
		q = q.Where("object_id = ?", f.ObjectID)
	}
	if f.Outcome != "" {
		q = q.Where("outcome = ?", f.Outcome)
	}
	if f.Since != nil {
		q = q.Where("at >= ?", *f.Since)
	}
	if f.Until != nil {
		q = q.Where("at < ?", *f.Until)
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, err
		}
		q = q.Where("id < ?", id)
	}
	var rows []AuditEntry
	if err := q.Order("id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return pageOf(rows, limit, func(e AuditEntry) uuid.UUID { return e.ID }), nil
}

func pageOf[T any](rows []T, limit int, id func(T) uuid.UUID) *Page[T] {
	p := &Page[T]{Items: rows}
	if len(rows) > limit {
		p.Items = rows[:limit]
		p.NextCursor = encodeCursor(id(rows[limit-1]))
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	return p
}
