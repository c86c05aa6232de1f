package tenant

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Scope is the one way to reach a tenant's tables. Every tenant query names
// its tables through Table (one round trip, safe on any pooled connection),
// and multi-statement writes run in Tx, which also sets search_path
// transaction-locally.
type Scope struct {
	ID     uuid.UUID
	Schema string
}

// ScopeOf returns the scope of the tenant with the given id.
func ScopeOf(id uuid.UUID) Scope { return Scope{ID: id, Schema: SchemaName(id)} }

// SchemaName is t_<hex of the tenant id>. It never depends on the slug, which
// can change.
func SchemaName(id uuid.UUID) string {
	return "t_" + strings.ReplaceAll(id.String(), "-", "")
}

// Table returns the schema-qualified name of one of the tenant's tables.
// name must be a constant from the code, never client input.
func (s Scope) Table(name string) string {
	return `"` + s.Schema + `".` + name
}

// DB returns db with the context set, for single-statement reads and writes
// that qualify their tables with Table.
func (s Scope) DB(ctx context.Context, db *gorm.DB) *gorm.DB {
	return db.WithContext(ctx)
}

// Tx runs fn in a transaction whose search_path is the tenant's schema (then
// public), set with set_config(..., true) so it ends with the transaction. A
// panic or error in fn rolls back; the connection goes back to the pool with
// no tenant state left on it. A tenant holds at most half of the pool's
// connections in transactions at once: a further one waits, holding no
// connection, at most the pool's acquire timeout (then ErrPoolTimeout).
func (s Scope) Tx(ctx context.Context, db *gorm.DB, fn func(tx *gorm.DB) error) error {
	if c := connectorOf(db); c != nil {
		release, err := c.tx.enter(ctx, s.ID, c.acquire)
		if err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		defer release()
	}
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := setSearchPath(tx, s.Schema); err != nil {
			return err
		}
		return fn(tx)
	})
}

func setSearchPath(tx *gorm.DB, schema string) error {
	return tx.Exec("SELECT set_config('search_path', ?, true)", `"`+schema+`", public`).Error
}
