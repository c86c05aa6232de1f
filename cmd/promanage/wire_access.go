package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/identity"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// accessDeps wires custom roles, rate limits, tokens and hooks into the API.
func (a *app) accessDeps() api.AccessDeps {
	d := api.AccessDeps{
		Policies:   &api.PolicyStore{Enforcers: a.enforcers, Notify: a.invalidator.Publish},
		HookAPIKey: a.cfg.HookAPIKey,
		RateLimits: api.RateLimits{User: a.cfg.RateLimitUser, Tenant: a.cfg.RateLimitTenant, AuthFailures: a.cfg.RateLimitAuth, Window: a.cfg.RateLimitWindow,
			TenantCreates: a.cfg.RateLimitTenantCreate},
	}
	d.Idempotency.KeysPerDay = a.cfg.IdempotencyKeysPerDay
	if a.redis != nil {
		d.RateLimits.Limiter = api.NewRedisLimiter(a.redis)
		d.Idempotency.Store = api.NewRedisIdempotencyStore(a.redis)
	} else {
		d.RateLimits.Limiter = api.NewMemoryLimiter()
		d.Idempotency.Store = api.NewMemoryIdempotencyStore()
	}
	if a.cfg.JWKSURL != "" {
		issuer := a.cfg.JWTIssuer
		if issuer == "" {
			issuer = a.cfg.KratosPublicURL
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		v, err := identity.NewJWTVerifier(ctx, identity.JWTOptions{JWKSURL: a.cfg.JWKSURL, Issuer: issuer, Audience: a.cfg.JWTAudience})
		if err != nil {
			// The API still serves session tokens and cookies; every JWT is
			// refused (401) until the configuration is fixed.
			slog.Error("JWT verification disabled: the JWKS could not be loaded", "url", a.cfg.JWKSURL, "err", err)
		}
		d.JWT = v
	}
	return d
}

// accessJobs are background jobs of the access area: the purge of tenants
// whose deletion grace period has ended.
func (a *app) accessJobs() []func(ctx context.Context) error {
	return []func(ctx context.Context) error{a.purgeLoop}
}

// purgeLoop purges due tenants every PurgeInterval until ctx ends. Several
// workers may run it at once: Registry.Purge takes a per-schema lock and only
// acts on a tenant that is still in the deleted state.
func (a *app) purgeLoop(ctx context.Context) error {
	every := a.cfg.PurgeInterval
	if every <= 0 {
		every = 10 * time.Minute
	}
	for {
		if n, err := a.purgeDue(ctx); err != nil {
			slog.ErrorContext(ctx, "purge deleted tenants", "purged", n, "err", err)
		} else if n > 0 {
			slog.InfoContext(ctx, "purged deleted tenants", "purged", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// purgeDue purges every deleted tenant whose purge_after has passed and
// returns how many it purged. One tenant's failure does not stop the others;
// it is retried on the next run.
func (a *app) purgeDue(ctx context.Context) (int, error) {
	ts, err := a.registry.List(ctx, tenant.StateDeleted)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	var n int
	var firstErr error
	for i := range ts {
		t := &ts[i]
		if t.PurgeAfter == nil || t.PurgeAfter.After(now) {
			continue
		}
		if err := purgeTenant(ctx, a, t); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		n++
	}
	return n, firstErr
}

// purgeTenant removes a soft-deleted tenant for good: its blobs first (so a
// failure leaves the registry row to retry from), then its schema, registry
// row, memberships and policies, then tells every replica. The CLI's
// `tenant purge` should call this too.
func purgeTenant(ctx context.Context, a *app, t *tenant.Tenant) error {
	if t.State != tenant.StateDeleted {
		return fmt.Errorf("purge tenant %s: only a deleted tenant can be purged (state %s)", t.Slug, t.State)
	}
	// Blobs first: once the registry row is gone nothing names them.
	n, err := storage.DeletePrefix(ctx, a.bucket, storage.TenantPrefix(t.ID))
	if err != nil {
		return fmt.Errorf("purge tenant %s: delete blobs: %w", t.Slug, err)
	}
	if err := a.registry.Purge(ctx, t.ID); err != nil {
		return fmt.Errorf("purge tenant %s: %w", t.Slug, err)
	}
	a.invalidator.Publish(ctx, t.ID)
	slog.InfoContext(ctx, "tenant purged", "tenant", t.Slug, "tenant_id", t.ID, "blobs", n)
	return nil
}
