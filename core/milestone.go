package core

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// Milestone is a dated goal of a project.
type Milestone struct {
	ID        uuid.UUID `json:"id"`
	ProjectID uuid.UUID `json:"project_id"`
	Name      string    `json:"name"`
	DueDate   Date      `json:"due_date"`
	Done      bool      `json:"done"`
	Overdue   bool      `json:"overdue"`
	CreatedBy uuid.UUID `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   int64     `json:"-"`
	ETag      string    `json:"etag"`
}

// MilestoneInput creates a milestone.
type MilestoneInput struct {
	Name    string
	DueDate Date
	Done    bool
}

// MilestoneUpdate changes a milestone partially; a zero DueDate clears it.
type MilestoneUpdate struct {
	Name    *string
	DueDate *Date
	Done    *bool
}

type milestoneRow struct {
	ID        uuid.UUID  `gorm:"column:id"`
	ProjectID uuid.UUID  `gorm:"column:project_id"`
	Name      string     `gorm:"column:name"`
	DueDate   *time.Time `gorm:"column:due_date"`
	Done      bool       `gorm:"column:done"`
	Version   int64      `gorm:"column:version"`
	CreatedBy uuid.UUID  `gorm:"column:created_by"`
	CreatedAt time.Time  `gorm:"column:created_at"`
	UpdatedAt time.Time  `gorm:"column:updated_at"`
}

const milestoneColumns = "id, project_id, name, due_date, done, version, created_by, created_at, updated_at"

func (r *milestoneRow) milestone(today Date) *Milestone {
	m := &Milestone{ID: r.ID, ProjectID: r.ProjectID, Name: r.Name, DueDate: dateFrom(r.DueDate), Done: r.Done,
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Version: r.Version, ETag: ETag(r.Version)}
	m.Overdue = !m.DueDate.IsZero() && m.DueDate.Before(today) && !m.Done
	return m
}

// MilestoneService manages the milestones of projects.
type MilestoneService struct {
	DB  *gorm.DB
	Now func() time.Time
}

func validateMilestone(v *Validator, name string) {
	v.Check(strings.TrimSpace(name) != "" && utf8.RuneCountInString(name) <= 200, "name", "must be 1-200 characters")
}

// Create adds a milestone to a live project. It returns ENOTFOUND for a
// missing project and EINVALID for bad input or too many milestones.
func (s *MilestoneService) Create(ctx context.Context, sc tenant.Scope, actor Actor, projectID uuid.UUID, in MilestoneInput) (*Milestone, error) {
	var v Validator
	validateMilestone(&v, in.Name)
	if err := v.Err(); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	row := milestoneRow{ID: id, ProjectID: projectID, Name: in.Name, DueDate: datePtr(in.DueDate), Done: in.Done,
		Version: 1, CreatedBy: actor.UserID, CreatedAt: now, UpdatedAt: now}
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if _, err := liveProject(tx, sc, projectID, "SHARE"); err != nil {
			return err
		}
		var n int64
		if err := tx.Table(sc.Table("milestones")).Where("project_id = ? AND deleted_at IS NULL", projectID).Count(&n).Error; err != nil {
			return err
		}
		if n >= MaxMilestonesPerProject {
			return Invalid(FieldError{Field: "project", Message: fmt.Sprintf("a project holds at most %d milestones", MaxMilestonesPerProject)})
		}
		if err := tx.Table(sc.Table("milestones")).Create(&row).Error; err != nil {
			return err
		}
		return RecordAudit(tx, sc, actor, "milestone.create", "milestone", id.String(), OutcomeSuccess,
			map[string]any{"project_id": projectID, "name": in.Name})
	})
	if err != nil {
		return nil, domainErr("create milestone", err)
	}
	return row.milestone(todayOf(s.Now)), nil
}

// Get returns a live milestone of a live project (ENOTFOUND otherwise).
func (s *MilestoneService) Get(ctx context.Context, sc tenant.Scope, projectID, id uuid.UUID) (*Milestone, error) {
	var rows []milestoneRow
	err := s.DB.WithContext(ctx).Raw("SELECT m."+strings.ReplaceAll(milestoneColumns, ", ", ", m.")+" FROM "+sc.Table("milestones")+" m JOIN "+
		sc.Table("projects")+" p ON p.id = m.project_id AND p.deleted_at IS NULL WHERE m.id = ? AND m.project_id = ? AND m.deleted_at IS NULL",
		id, projectID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("get milestone: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "milestone not found"}
	}
	return rows[0].milestone(todayOf(s.Now)), nil
}

// List returns the live milestones of a live project by due date (undated
// last), then creation. A project holds at most MaxMilestonesPerProject, so
// the list is not paginated. It returns ENOTFOUND for a missing project.
func (s *MilestoneService) List(ctx context.Context, sc tenant.Scope, projectID uuid.UUID) ([]Milestone, error) {
	var rows []struct {
		ID        *uuid.UUID `gorm:"column:id"`
		ProjectID *uuid.UUID `gorm:"column:project_id"`
		Name      *string    `gorm:"column:name"`
		DueDate   *time.Time `gorm:"column:due_date"`
		Done      *bool      `gorm:"column:done"`
		Version   *int64     `gorm:"column:version"`
		CreatedBy *uuid.UUID `gorm:"column:created_by"`
		CreatedAt *time.Time `gorm:"column:created_at"`
		UpdatedAt *time.Time `gorm:"column:updated_at"`
	}
	// One round trip: zero rows means no such project; a project without
	// milestones gives one row of NULLs.
	err := s.DB.WithContext(ctx).Raw("SELECT m."+strings.ReplaceAll(milestoneColumns, ", ", ", m.")+" FROM "+sc.Table("projects")+" p LEFT JOIN "+
		sc.Table("milestones")+" m ON m.project_id = p.id AND m.deleted_at IS NULL WHERE p.id = ? AND p.deleted_at IS NULL "+
		"ORDER BY m.due_date ASC NULLS LAST, m.id ASC", projectID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list milestones: %w", err)
	}
	if len(rows) == 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	today := todayOf(s.Now)
	out := make([]Milestone, 0, len(rows))
	for _, r := range rows {
		if r.ID == nil {
			continue
		}
		row := milestoneRow{ID: *r.ID, ProjectID: *r.ProjectID, Name: *r.Name, DueDate: r.DueDate, Done: *r.Done, Version: *r.Version,
			CreatedBy: *r.CreatedBy, CreatedAt: *r.CreatedAt, UpdatedAt: *r.UpdatedAt}
		out = append(out, *row.milestone(today))
	}
	return out, nil
}

// Update applies a partial update if the milestone is still at version
// ifMatch. It returns ENOTFOUND, EPRECONDITION or EINVALID.
func (s *MilestoneService) Update(ctx context.Context, sc tenant.Scope, actor Actor, projectID, id uuid.UUID, ifMatch int64, u MilestoneUpdate) (*Milestone, error) {
	var out *Milestone
	today := todayOf(s.Now)
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if _, err := liveProject(tx, sc, projectID, "SHARE"); err != nil {
			return err
		}
		var rows []milestoneRow
		if err := tx.Raw("SELECT "+milestoneColumns+" FROM "+sc.Table("milestones")+" WHERE id = ? AND project_id = ? AND deleted_at IS NULL FOR UPDATE",
			id, projectID).Scan(&rows).Error; err != nil {
			return err
		}
		if len(rows) == 0 {
			return &Error{Code: ENOTFOUND, Message: "milestone not found"}
		}
		row := rows[0]
		if row.Version != ifMatch {
			return &Error{Code: EPRECONDITION, Message: "the milestone has changed since you read it (ETag mismatch)"}
		}
		changed := map[string]any{}
		if u.Name != nil && *u.Name != row.Name {
			row.Name, changed["name"] = *u.Name, *u.Name
		}
		if u.DueDate != nil && !dateFrom(row.DueDate).Time().Equal(u.DueDate.Time()) {
			row.DueDate, changed["due_date"] = datePtr(*u.DueDate), datePtr(*u.DueDate)
		}
		if u.Done != nil && *u.Done != row.Done {
			row.Done, changed["done"] = *u.Done, *u.Done
		}
		var v Validator
		validateMilestone(&v, row.Name)
		if err := v.Err(); err != nil {
			return err
		}
		if len(changed) == 0 {
			out = row.milestone(today)
			return nil
		}
		audit := make(map[string]any, len(changed))
		for k, v := range changed {
			audit[k] = v
		}
		now := time.Now().UTC()
		changed["version"] = gorm.Expr("version + 1")
		changed["updated_at"] = now
		if err := tx.Table(sc.Table("milestones")).Where("id = ?", id).Updates(changed).Error; err != nil {
			return err
		}
		row.Version++
		row.UpdatedAt = now
		out = row.milestone(today)
		return RecordAudit(tx, sc, actor, "milestone.update", "milestone", id.String(), OutcomeSuccess, audit)
	})
	if err != nil {
		return nil, domainErr("update milestone", err)
	}
	return out, nil
}

// Delete soft-deletes a milestone. It returns ENOTFOUND if it or its project
// does not exist in the tenant.
func (s *MilestoneService) Delete(ctx context.Context, sc tenant.Scope, actor Actor, projectID, id uuid.UUID) error {
	return softDeleteProjectChild(ctx, s.DB, sc, actor, "milestones", "milestone", projectID, id)
}

// softDeleteProjectChild soft-deletes one row of a project's child table
// (tasks, milestones) under a share lock on the live project, with its audit
// row. It returns ENOTFOUND if the row or its project does not exist.
func softDeleteProjectChild(ctx context.Context, db *gorm.DB, sc tenant.Scope, actor Actor, table, kind string, projectID, id uuid.UUID) error {
	err := sc.Tx(ctx, db, func(tx *gorm.DB) error {
		if _, err := liveProject(tx, sc, projectID, "SHARE"); err != nil {
			return err
		}
		res := tx.Exec("UPDATE "+sc.Table(table)+" SET deleted_at = now(), version = version + 1, updated_at = now() WHERE id = ? AND project_id = ? AND deleted_at IS NULL", id, projectID)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return &Error{Code: ENOTFOUND, Message: kind + " not found"}
		}
		return RecordAudit(tx, sc, actor, kind+".delete", kind, id.String(), OutcomeSuccess, map[string]any{"project_id": projectID})
	})
	return domainErr("delete "+kind, err)
}
