package rbac

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// InvalidationChannel is the Redis pub/sub channel on which replicas announce
// that a tenant's memberships, roles or registry row changed.
const InvalidationChannel = "promanage:invalidate"

// Invalidator spreads "tenant X changed" across replicas. Without Redis it
// only acts locally (one replica).
type Invalidator struct {
	Redis     redis.UniversalClient // nil: local only
	Enforcers *Enforcers
	// OnChange runs for every change, local or remote (e.g. drop the tenant
	// registry cache).
	OnChange func(tenantID uuid.UUID)
}

// Publish drops the tenant's cached state here and tells the other replicas.
func (iv *Invalidator) Publish(ctx context.Context, tenantID uuid.UUID) {
	iv.apply(tenantID)
	if iv.Redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := iv.Redis.Publish(ctx, InvalidationChannel, tenantID.String()).Err(); err != nil {
		// The periodic reload (Options.MaxAge) still bounds how long another
		// replica can use the stale policy.
		slog.WarnContext(ctx, "publish invalidation", "tenant_id", tenantID, "err", err)
	}
}

func (iv *Invalidator) apply(tenantID uuid.UUID) {
	iv.Enforcers.Invalidate(tenantID)
	if iv.OnChange != nil {
		iv.OnChange(tenantID)
	}
}

// Run listens for other replicas' changes until ctx ends. After a
// (re)subscription every cached enforcer is dropped, since messages sent
// while disconnected were lost.
func (iv *Invalidator) Run(ctx context.Context) {
	if iv.Redis == nil {
		return
	}
	for ctx.Err() == nil {
		sub := iv.Redis.Subscribe(ctx, InvalidationChannel)
		if _, err := sub.Receive(ctx); err != nil {
			sub.Close()
			slog.WarnContext(ctx, "subscribe invalidations", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		iv.Enforcers.InvalidateAll()
		if iv.OnChange != nil {
			iv.OnChange(uuid.Nil)
		}
		stop := context.AfterFunc(ctx, func() { sub.Close() })
		ch := sub.Channel()
		for msg := range ch {
			id, err := uuid.Parse(msg.Payload)
			if err != nil {
				continue
			}
			iv.apply(id)
		}
		stop()
		sub.Close()
	}
}
