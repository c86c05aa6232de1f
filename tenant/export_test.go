package tenant

import (
	"context"

	"github.com/google/uuid"
)

// MigrateOne exposes migrateOne to the external tests (the step of a fleet
// migration that runs after the tenant was listed).
func (r *Registry) MigrateOne(ctx context.Context, id uuid.UUID, target int) error {
	return r.migrateOne(ctx, id, target)
}
