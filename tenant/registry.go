package tenant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"
)

// States of a tenant's lifecycle.
const (
	StateProvisioning = "provisioning"
	StateActive       = "active"
	StateSuspended    = "suspended"
	StateDeleted      = "deleted"
)

// Errors returned by the registry; package core translates them.
var (
	ErrNotFound       = errors.New("tenant not found")
	ErrSlugTaken      = errors.New("tenant slug is taken")
	ErrInvalidSlug    = errors.New("slug must match ^[a-z][a-z0-9-]{2,39}$")
	ErrReservedSlug   = errors.New("slug is reserved")
	ErrTooManyTenants = errors.New("the owner already owns the most tenants allowed")
)

// SlugPattern is the shape of a tenant slug.
var SlugPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{2,39}$`)

// reservedSlugs can never name a tenant: names of PostgreSQL's own schemas
// and of the platform's hosts, paths and services, which a tenant could use
// to impersonate the platform (in URLs, e-mails, logs) or confuse operators.
var reservedSlugs = []string{
	"public", "information_schema", "admin", "administrator", "api", "www", "kratos", "ory",
	"app", "apps", "auth", "oauth", "login", "logout", "signin", "signup", "register",
	"account", "accounts", "billing", "dashboard", "docs", "help", "support", "status",
	"static", "assets", "cdn", "mail", "email", "smtp", "root", "system", "sys", "null",
	"undefined", "settings", "me", "metrics", "health", "healthz", "readyz", "openapi",
	"graphql", "hooks", "blobs", "tenants", "internal", "promanage", "security", "abuse",
	"postmaster", "webmaster", "hostmaster", "operator", "owner", "staff", "team",
}

// ReservedSlug reports whether slug is reserved for the platform: a name in
// the reserved list, or one starting with "pg-" or "pg_" (PostgreSQL's
// prefix for its own schemas, pg_catalog, pg_toast, ...).
func ReservedSlug(slug string) bool {
	s := strings.ToLower(slug)
	return slices.Contains(reservedSlugs, s) || strings.HasPrefix(s, "pg-") || strings.HasPrefix(s, "pg_")
}

// Tenant is one organisation's registry row.
type Tenant struct {
	ID            uuid.UUID  `gorm:"column:id;primaryKey"`
	Slug          string     `gorm:"column:slug"`
	Name          string     `gorm:"column:name"`
	State         string     `gorm:"column:state"`
	SchemaName    string     `gorm:"column:schema_name"`
	SchemaVersion int        `gorm:"column:schema_version"`
	Settings      string     `gorm:"column:settings;type:jsonb"` // JSON text
	CreatedAt     time.Time  `gorm:"column:created_at"`
	UpdatedAt     time.Time  `gorm:"column:updated_at"`
	DeletedAt     *time.Time `gorm:"column:deleted_at"`
	PurgeAfter    *time.Time `gorm:"column:purge_after"`
}

// Scope returns the tenant's database scope.
func (t *Tenant) Scope() Scope { return Scope{ID: t.ID, Schema: t.SchemaName} }

// Options configures a Registry.
type Options struct {
	// CacheTTL bounds how long a slug lookup is served from memory (default 5s).
	CacheTTL time.Duration
	// Migrations replaces the embedded tenant migrations (tests only).
	Migrations []Migration
}

// Registry is the tenant registry in public.tenants.
type Registry struct {
	db         *gorm.DB
	migrations []Migration
	ttl        time.Duration

	mu    sync.Mutex
	cache map[string]cachedTenant // by slug
}

type cachedTenant struct {
	t       Tenant
	expires time.Time
}

// NewRegistry returns a registry on db.
func NewRegistry(db *gorm.DB, opts *Options) *Registry {
	r := &Registry{db: db, migrations: TenantMigrations(), ttl: 5 * time.Second, cache: map[string]cachedTenant{}}
	if opts != nil {
		if opts.CacheTTL != 0 {
			r.ttl = opts.CacheTTL
		}
		if opts.Migrations != nil {
			r.migrations = opts.Migrations
		}
	}
	return r
}

// LatestVersion is the tenant schema version this binary migrates to.
func (r *Registry) LatestVersion() int { return len(r.migrations) }

// ProvisionParams describes a new tenant.
type ProvisionParams struct {
	Slug string
	Name string
	// Seed runs inside the provisioning transaction (for example to seed the
	// built-in roles and make the creator the owner). Its error aborts
	// provisioning and leaves nothing behind.
	Seed func(tx *gorm.DB, t *Tenant) error
	// Version provisions at a given schema version (default latest; tests).
	Version int
	// Owner and MaxOwned, when both are set, refuse the tenant
	// (ErrTooManyTenants) if Owner already owns MaxOwned tenants in any
	// state (a soft-deleted tenant keeps its schema until purged). Counted
	// under a per-user lock in the provisioning transaction, so parallel
	// requests cannot overshoot.
	Owner    uuid.UUID
	MaxOwned int
}

// Provision creates the registry row, the schema t_<hex id> and its tables,
// all in one transaction: a failure leaves neither row nor schema.
// It returns ErrInvalidSlug, ErrReservedSlug or ErrSlugTaken for a bad,
// reserved or used slug (a live or soft-deleted tenant's: the answer does
// not say which), and ErrTooManyTenants (see ProvisionParams.MaxOwned).
func (r *Registry) Provision(ctx context.Context, p ProvisionParams) (*Tenant, error) {
	if !SlugPattern.MatchString(p.Slug) {
		return nil, ErrInvalidSlug
	}
	if ReservedSlug(p.Slug) {
		return nil, ErrReservedSlug
	}
	// A cheap check first: a taken slug must not cost a schema's creation
	// (the unique index still decides a race).
	var taken int64
	if err := r.db.WithContext(ctx).Table("public.tenants").Where("slug = ?", p.Slug).Count(&taken).Error; err != nil {
		return nil, fmt.Errorf("provision tenant %s: %w", p.Slug, err)
	}
	if taken > 0 {
		return nil, ErrSlugTaken
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	version := p.Version
	if version <= 0 || version > len(r.migrations) {
		version = len(r.migrations)
	}
	t := &Tenant{ID: id, Slug: p.Slug, Name: p.Name, State: StateActive, SchemaName: SchemaName(id), SchemaVersion: version, Settings: "{}"}
	err = r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if p.Owner != uuid.Nil && p.MaxOwned > 0 {
			if err := checkOwned(tx, p.Owner, p.MaxOwned); err != nil {
				return err
			}
		}
		if err := tx.Table("public.tenants").Create(t).Error; err != nil {
			return err
		}
		if err := tx.Exec(`CREATE SCHEMA "` + t.SchemaName + `"`).Error; err != nil {
			return err
		}
		if err := applyTenantMigrations(tx, t.SchemaName, r.migrations, 0, version); err != nil {
			return err
		}
		if p.Seed != nil {
			if err := p.Seed(tx, t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if isUniqueViolation(err) {
			return nil, ErrSlugTaken
		}
		if errors.Is(err, ErrTooManyTenants) {
			return nil, err
		}
		return nil, fmt.Errorf("provision tenant %s: %w", p.Slug, err)
	}
	return t, nil
}

// checkOwned returns ErrTooManyTenants if the user owns max tenants or more.
// The advisory lock (per user, released at commit) serialises one user's
// concurrent creations.
func checkOwned(tx *gorm.DB, user uuid.UUID, max int) error {
	if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 2))", "tenant-owner:"+user.String()).Error; err != nil {
		return err
	}
	var n int64
	if err := tx.Raw("SELECT count(*) FROM public.memberships WHERE user_id = ? AND role = 'owner'", user).Scan(&n).Error; err != nil {
		return fmt.Errorf("count owned tenants: %w", err)
	}
	if n >= int64(max) {
		return ErrTooManyTenants
	}
	return nil
}

// BySlug returns a tenant in any state, from a short-lived cache.
func (r *Registry) BySlug(ctx context.Context, slug string) (*Tenant, error) {
	now := time.Now()
	r.mu.Lock()
	c, ok := r.cache[slug]
	r.mu.Unlock()
	if ok && now.Before(c.expires) {
		t := c.t
		return &t, nil
	}
	return r.BySlugFresh(ctx, slug)
}

// BySlugFresh reads a tenant in any state from the database, bypassing
// (and refreshing) the cache: a state change made by another process (the
// operator's suspend, another replica's delete) is seen at once, whether
// or not its invalidation message arrived. One indexed read.
func (r *Registry) BySlugFresh(ctx context.Context, slug string) (*Tenant, error) {
	now := time.Now()
	var t Tenant
	err := r.db.WithContext(ctx).Table("public.tenants").Where("slug = ?", slug).Take(&t).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("find tenant: %w", err)
	}
	r.mu.Lock()
	r.cache[slug] = cachedTenant{t: t, expires: now.Add(r.ttl)}
	r.mu.Unlock()
	return &t, nil
}

// ByID returns a tenant in any state, uncached.
func (r *Registry) ByID(ctx context.Context, id uuid.UUID) (*Tenant, error) {
	var t Tenant
	err := r.db.WithContext(ctx).Table("public.tenants").Where("id = ?", id).Take(&t).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("find tenant: %w", err)
	}
	return &t, nil
}

// InvalidateAll empties this process's cache.
func (r *Registry) InvalidateAll() {
	r.mu.Lock()
	clear(r.cache)
	r.mu.Unlock()
}

// List returns all tenants, or only those in the given states.
func (r *Registry) List(ctx context.Context, states ...string) ([]Tenant, error) {
	q := r.db.WithContext(ctx).Table("public.tenants").Order("slug")
	if len(states) > 0 {
		q = q.Where("state IN ?", states)
	}
	var ts []Tenant
	if err := q.Find(&ts).Error; err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return ts, nil
}

// Membership is a tenant the user belongs to, with the user's role.
type Membership struct {
	Tenant
	Role string `gorm:"column:role"`
}

// ListForUser returns the live tenants a user is a member of.
func (r *Registry) ListForUser(ctx context.Context, userID uuid.UUID) ([]Membership, error) {
	var ms []Membership
	err := r.db.WithContext(ctx).Raw(`SELECT t.*, m.role FROM public.tenants t
		JOIN public.memberships m ON m.tenant_id = t.id
		WHERE m.user_id = ? AND t.state IN ('active','suspended') ORDER BY t.slug`, userID).Scan(&ms).Error
	if err != nil {
		return nil, fmt.Errorf("list tenants of user: %w", err)
	}
	return ms, nil
}

// Rename changes a tenant's display name.
func (r *Registry) Rename(ctx context.Context, id uuid.UUID, name string) error {
	return r.update(ctx, id, "name = ?", name)
}

// SetState moves a live tenant to active or suspended.
func (r *Registry) SetState(ctx context.Context, id uuid.UUID, state string) error {
	if state != StateActive && state != StateSuspended {
		return fmt.Errorf("set tenant state: invalid state %q", state)
	}
	return r.update(ctx, id, "state = ?", state)
}

// SoftDelete marks a tenant deleted; the worker purges it after grace. Its
// slug stays reserved until then.
func (r *Registry) SoftDelete(ctx context.Context, id uuid.UUID, grace time.Duration) error {
	res := r.db.WithContext(ctx).Exec(`UPDATE public.tenants SET state = 'deleted', deleted_at = now(),
		purge_after = now() + make_interval(secs => ?), updated_at = now() WHERE id = ? AND state <> 'deleted'`,
		grace.Seconds(), id)
	if res.Error != nil {
		return fmt.Errorf("delete tenant: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	r.InvalidateAll()
	return nil
}

func (r *Registry) update(ctx context.Context, id uuid.UUID, set string, v any) error {
	res := r.db.WithContext(ctx).Exec("UPDATE public.tenants SET "+set+", updated_at = now() WHERE id = ? AND state <> 'deleted'", v, id)
	if res.Error != nil {
		return fmt.Errorf("update tenant: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrNotFound
	}
	r.InvalidateAll()
	return nil
}

// Purge drops a deleted tenant's schema and registry row (memberships and
// policies of the tenant go with it). Blobs are the caller's to remove first.
func (r *Registry) Purge(ctx context.Context, id uuid.UUID) error {
	return r.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var t Tenant
		if err := tx.Table("public.tenants").Where("id = ? AND state = 'deleted'", id).Take(&t).Error; err != nil {
			if errors.Is(err, gorm.ErrRecordNotFound) {
				return ErrNotFound
			}
			return err
		}
		if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", t.SchemaName).Error; err != nil {
			return err
		}
		if err := tx.Exec(`DROP SCHEMA IF EXISTS "` + t.SchemaName + `" CASCADE`).Error; err != nil {
			return fmt.Errorf("purge tenant %s: %w", t.Slug, err)
		}
		if err := tx.Exec("DELETE FROM public.casbin_rule WHERE (ptype = 'p' AND v1 = ?) OR (ptype = 'g' AND v2 = ?)", id.String(), id.String()).Error; err != nil {
			return err
		}
		return tx.Exec("DELETE FROM public.tenants WHERE id = ?", id).Error
	})
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// DB returns the registry's database handle.
func (r *Registry) DB() *gorm.DB { return r.db }
