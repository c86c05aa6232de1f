package tenant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Settings are a tenant's typed settings, stored in public.tenants.settings
// (jsonb). Each area owns one member of the object; setters replace only
// their member, so areas never overwrite each other's settings.
//
//	{"storage": {"quota_bytes": 10737418240, "max_file_bytes": 1073741824,
//	             "allowed_content_types": ["application/pdf", "image/*"]}}

// StorageSettings limit a tenant's documents. A zero number means "the
// platform default" (see WithDefaults); an empty allowlist allows every
// content type.
type StorageSettings struct {
	// QuotaBytes caps the bytes of all stored versions of all documents,
	// including deleted documents whose blobs are not purged yet, plus the
	// reservations of uploads in flight.
	QuotaBytes int64 `json:"quota_bytes,omitempty"`
	// MaxFileBytes caps one uploaded file.
	MaxFileBytes int64 `json:"max_file_bytes,omitempty"`
	// AllowedContentTypes are media types ("application/pdf") or type
	// wildcards ("image/*") an upload's sniffed type must match.
	AllowedContentTypes []string `json:"allowed_content_types,omitempty"`
}

// Limits of storage settings.
const (
	maxAllowedTypes  = 100
	maxMediaTypeLen  = 127
	settingsStorage  = "storage"
	settingsMaxBytes = 64 << 10
)

// WithDefaults fills the zero limits of s from d.
func (s StorageSettings) WithDefaults(d StorageSettings) StorageSettings {
	if s.QuotaBytes <= 0 {
		s.QuotaBytes = d.QuotaBytes
	}
	if s.MaxFileBytes <= 0 {
		s.MaxFileBytes = d.MaxFileBytes
	}
	if len(s.AllowedContentTypes) == 0 {
		s.AllowedContentTypes = d.AllowedContentTypes
	}
	return s
}

// Validate reports the first problem of s, naming the setting.
func (s StorageSettings) Validate() error {
	if s.QuotaBytes < 0 {
		return errors.New("quota_bytes must not be negative")
	}
	if s.MaxFileBytes < 0 {
		return errors.New("max_file_bytes must not be negative")
	}
	if len(s.AllowedContentTypes) > maxAllowedTypes {
		return fmt.Errorf("allowed_content_types has more than %d entries", maxAllowedTypes)
	}
	for _, t := range s.AllowedContentTypes {
		if !validTypePattern(t) {
			return fmt.Errorf("allowed_content_types: %q is not a media type (type/subtype or type/*)", t)
		}
	}
	return nil
}

func validTypePattern(p string) bool {
	if len(p) == 0 || len(p) > maxMediaTypeLen || p != strings.ToLower(p) {
		return false
	}
	typ, sub, ok := strings.Cut(p, "/")
	if !ok || typ == "" || typ == "*" || sub == "" {
		return false
	}
	if sub == "*" {
		p = typ + "/x"
	}
	mt, params, err := mime.ParseMediaType(p)
	return err == nil && len(params) == 0 && mt == p
}

// AllowsContentType reports whether a content type (parameters ignored)
// matches the allowlist; an empty allowlist allows everything.
func (s StorageSettings) AllowsContentType(contentType string) bool {
	if len(s.AllowedContentTypes) == 0 {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	typ, _, _ := strings.Cut(mt, "/")
	for _, p := range s.AllowedContentTypes {
		if p == mt || p == typ+"/*" {
			return true
		}
	}
	return false
}

// StorageSettingsOf decodes the storage member of a tenant's settings.
func StorageSettingsOf(t *Tenant) (StorageSettings, error) {
	var doc struct {
		Storage StorageSettings `json:"storage"`
	}
	if t.Settings == "" {
		return StorageSettings{}, nil
	}
	if err := json.Unmarshal([]byte(t.Settings), &doc); err != nil {
		return StorageSettings{}, fmt.Errorf("tenant %s settings: %w", t.Slug, err)
	}
	return doc.Storage, nil
}

// StorageSettings reads a tenant's storage settings from the database,
// bypassing the slug cache (a changed quota applies to the next upload). It
// returns ErrNotFound for a tenant that does not exist.
func (r *Registry) StorageSettings(ctx context.Context, id uuid.UUID) (StorageSettings, error) {
	var rows []string
	err := r.db.WithContext(ctx).Raw("SELECT settings::text FROM public.tenants WHERE id = ?", id).Scan(&rows).Error
	if err != nil {
		return StorageSettings{}, fmt.Errorf("read tenant settings: %w", err)
	}
	if len(rows) == 0 {
		return StorageSettings{}, ErrNotFound
	}
	return StorageSettingsOf(&Tenant{ID: id, Settings: rows[0]})
}

// SetStorageSettings replaces a live tenant's storage settings (other members
// of the settings object are kept). It returns the validation error of s, or
// ErrNotFound.
func (r *Registry) SetStorageSettings(ctx context.Context, id uuid.UUID, s StorageSettings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return r.setSetting(r.db.WithContext(ctx), id, settingsStorage, s)
}

func (r *Registry) setSetting(db *gorm.DB, id uuid.UUID, member string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > settingsMaxBytes {
		return fmt.Errorf("%s settings exceed %d bytes", member, settingsMaxBytes)
	}
	// jsonb is bound as text: pgx sends []byte as bytea.
	res := db.Exec(`UPDATE public.tenants SET settings = jsonb_set(settings, ?::text[], ?::jsonb), updated_at = now()
		WHERE id = ? AND state <> 'deleted'`, "{"+member+"}", string(b), id)
	if res.Error != nil {
		return fmt.Errorf("update tenant settings: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	r.InvalidateAll()
	return nil
}

// DeadlineWarningDays reads the tenant's "deadline_warning_days" setting
// (0 when unset: the platform default applies).
func DeadlineWarningDays(t *Tenant) int {
	var st struct {
		Days int `json:"deadline_warning_days"`
	}
	if t.Settings != "" {
		_ = json.Unmarshal([]byte(t.Settings), &st)
	}
	return st.Days
}

// SetDeadlineWarningDays sets how many days before a deadline the scheduler
// announces it (1-365). It returns ErrNotFound for a tenant that is gone.
func (r *Registry) SetDeadlineWarningDays(ctx context.Context, id uuid.UUID, days int) error {
	if days < 1 || days > 365 {
		return fmt.Errorf("deadline_warning_days must be from 1 to 365")
	}
	return r.setSetting(r.db.WithContext(ctx), id, "deadline_warning_days", days)
}

// UpdateStorageSettings changes a live tenant's storage settings with
// change, under a lock on the tenant's row from the read to the write, so
// that two writers of different members (an admin's allowlist, the
// operator's quota) never undo each other's change. It returns the settings
// as written, the validation error of the result, or ErrNotFound.
func (r *Registry) UpdateStorageSettings(ctx context.Context, id uuid.UUID, change func(*StorageSettings)) (StorageSettings, error) {
	var st StorageSettings
	err := r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []string
		if err := tx.Raw("SELECT settings::text FROM public.tenants WHERE id = ? AND state <> 'deleted' FOR UPDATE", id).Scan(&rows).Error; err != nil {
			return fmt.Errorf("read tenant settings: %w", err)
		}
		if len(rows) == 0 {
			return ErrNotFound
		}
		var err error
		if st, err = StorageSettingsOf(&Tenant{ID: id, Settings: rows[0]}); err != nil {
			return err
		}
		change(&st)
		if err := st.Validate(); err != nil {
			return err
		}
		return r.setSetting(tx, id, settingsStorage, st)
	})
	if err != nil {
		return StorageSettings{}, err
	}
	r.InvalidateAll() // again after commit: a reload during the transaction saw the old row
	return st, nil
}
