package rbac

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"time"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	gormadapter "github.com/casbin/gorm-adapter/v3"
	"github.com/google/uuid"
	"gorm.io/gorm"
)

//go:embed model.conf
var modelText string

// Options configures Enforcers.
type Options struct {
	// MaxAge bounds how long a tenant's enforcer is used before it is
	// reloaded from the database, so that a missed invalidation cannot keep
	// a revoked grant alive (default 30s).
	MaxAge time.Duration
}

// Enforcers caches one Casbin enforcer per tenant, each loaded with only that
// tenant's rules, so the cost of a decision does not grow with the number of
// tenants.
type Enforcers struct {
	db     *gorm.DB
	maxAge time.Duration

	mu      sync.Mutex
	tenants map[uuid.UUID]*tenantEnforcer
}

type tenantEnforcer struct {
	once     sync.Once
	err      error
	e        *casbin.SyncedEnforcer
	loadedAt time.Time
}

// NewEnforcers returns an empty enforcer cache over the casbin_rule table.
func NewEnforcers(db *gorm.DB, opts *Options) (*Enforcers, error) {
	es := &Enforcers{db: db, maxAge: 30 * time.Second, tenants: map[uuid.UUID]*tenantEnforcer{}}
	if opts != nil && opts.MaxAge > 0 {
		es.maxAge = opts.MaxAge
	}
	return es, nil
}

// loadTimeout bounds the load of one tenant's policy.
const loadTimeout = 5 * time.Second

func (es *Enforcers) get(ctx context.Context, tenantID uuid.UUID) (*casbin.SyncedEnforcer, error) {
	es.mu.Lock()
	te := es.tenants[tenantID]
	if te == nil || (te.loadedAt != time.Time{} && time.Since(te.loadedAt) > es.maxAge) {
		te = &tenantEnforcer{}
		es.tenants[tenantID] = te
	}
	es.mu.Unlock()
	te.once.Do(func() {
		// The policy is as old as the moment the load started: MaxAge counts
		// from there. loadedAt is read by get under es.mu.
		start := time.Now()
		lctx, cancel := context.WithTimeout(ctx, loadTimeout)
		defer cancel()
		te.e, te.err = es.load(lctx, tenantID)
		es.mu.Lock()
		te.loadedAt = start
		es.mu.Unlock()
		if te.err != nil {
			es.invalidateEntry(tenantID, te) // retry on the next request
		}
	})
	return te.e, te.err
}

// invalidateEntry drops te if it is still the tenant's cached entry.
func (es *Enforcers) invalidateEntry(tenantID uuid.UUID, te *tenantEnforcer) {
	es.mu.Lock()
	if es.tenants[tenantID] == te {
		delete(es.tenants, tenantID)
	}
	es.mu.Unlock()
}

func (es *Enforcers) load(ctx context.Context, tenantID uuid.UUID) (*casbin.SyncedEnforcer, error) {
	m, err := model.NewModelFromString(modelText)
	if err != nil {
		return nil, err
	}
	e, err := casbin.NewSyncedEnforcer(m)
	if err != nil {
		return nil, err
	}
	// An adapter per load, on a handle with the caller's deadline (the
	// shared adapter's queries would have none); building one is free.
	a, err := gormadapter.NewFilteredAdapterByDB(es.db.WithContext(ctx), "", "casbin_rule")
	if err != nil {
		return nil, fmt.Errorf("rbac adapter: %w", err)
	}
	e.SetAdapter(a)
	dom := tenantID.String()
	filter := []gormadapter.Filter{
		{Ptype: []string{"p"}, V1: []string{dom}},
		{Ptype: []string{"g"}, V2: []string{dom}},
	}
	if err := e.LoadFilteredPolicy(filter); err != nil {
		return nil, fmt.Errorf("load policy of tenant %s: %w", dom, err)
	}
	return e, nil
}

// Invalidate drops a tenant's enforcer; the next decision reloads it.
func (es *Enforcers) Invalidate(tenantID uuid.UUID) {
	es.mu.Lock()
	delete(es.tenants, tenantID)
	es.mu.Unlock()
}

// InvalidateAll drops every cached enforcer.
func (es *Enforcers) InvalidateAll() {
	es.mu.Lock()
	clear(es.tenants)
	es.mu.Unlock()
}

// RoleOf returns the user's role in the tenant, or "" if not a member.
func (es *Enforcers) RoleOf(ctx context.Context, tenantID, userID uuid.UUID) (string, error) {
	e, err := es.get(ctx, tenantID)
	if err != nil {
		return "", err
	}
	roles := e.GetRolesForUserInDomain(userID.String(), tenantID.String())
	if len(roles) == 0 {
		return "", nil
	}
	return roles[0], nil
}

// Allow reports whether the user may perform act on obj in the tenant.
func (es *Enforcers) Allow(ctx context.Context, tenantID, userID uuid.UUID, obj, act string) (bool, error) {
	e, err := es.get(ctx, tenantID)
	if err != nil {
		return false, err
	}
	ok, err := e.Enforce(userID.String(), tenantID.String(), obj, act)
	if err != nil {
		return false, fmt.Errorf("enforce: %w", err)
	}
	return ok, nil
}
