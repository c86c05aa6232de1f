package identity

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// UserRecord is a Kratos identity's profile as ProManage keeps it.
type UserRecord struct {
	ID    uuid.UUID
	Email string
	Name  string
	// IdentityUpdatedAt is the identity's updated_at in Kratos; zero when
	// unknown.
	IdentityUpdatedAt time.Time
}

// UpsertUserIfNewer inserts the user, or updates the row only if rec is newer
// than what it holds (by the identity's updated_at), so that replayed or
// reordered deliveries are harmless. A record without IdentityUpdatedAt
// only inserts a missing row. It reports whether the row changed.
func UpsertUserIfNewer(ctx context.Context, db *gorm.DB, rec UserRecord) (bool, error) {
	var res *gorm.DB
	if rec.IdentityUpdatedAt.IsZero() {
		res = db.WithContext(ctx).Exec(`INSERT INTO public.users (id, email, name, created_at, updated_at)
			VALUES (?, ?, ?, now(), now()) ON CONFLICT (id) DO NOTHING`, rec.ID, rec.Email, rec.Name)
	} else {
		res = db.WithContext(ctx).Exec(`INSERT INTO public.users AS u (id, email, name, identity_updated_at, created_at, updated_at)
			VALUES (?, ?, ?, ?, now(), now())
			ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name,
				identity_updated_at = EXCLUDED.identity_updated_at, updated_at = now()
			WHERE u.identity_updated_at IS NULL OR u.identity_updated_at < EXCLUDED.identity_updated_at`,
			rec.ID, rec.Email, rec.Name, rec.IdentityUpdatedAt.UTC())
	}
	if res.Error != nil {
		return false, fmt.Errorf("upsert user: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// UserFromTraits reads email and name from identity traits of
// deploy/kratos/identity.schema.json.
func UserFromTraits(traits any) (email, name string) { return traitsOf(traits) }
