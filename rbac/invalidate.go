package rbac

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// InvalidationChannel is the Redis pub/sub channel on which replicas announce
// that a tenant's memberships, roles or registry row changed. Classic
// PUBLISH/SUBSCRIBE, also on a Redis Cluster, where a message reaches every
// node over the cluster bus (RATIONALE.md, "Redis Cluster").
const InvalidationChannel = "promanage:invalidate"

// Bounds of the invalidation channel's repair work.
const (
	// republishWindow is how long a failed publication is retried. After
	// it every replica has reloaded the tenant anyway (Options.MaxAge).
	republishWindow = 30 * time.Second
	// republishEvery is how often failed publications are retried.
	republishEvery = 250 * time.Millisecond
	// maxPendingRepublish bounds the failed publications kept for retry;
	// beyond it a change relies on the periodic reload alone.
	maxPendingRepublish = 10_000
	// quietPing is how long the subscription may stay silent before it is
	// asked for a pong; a second silence of that length means a connection
	// that died without a word (a partition), and it is replaced.
	quietPing = 5 * time.Second
)

// Invalidator spreads "tenant X changed" across replicas. Without Redis it
// only acts locally (one replica).
//
// Pub/sub delivers at most once, so three things bound what a lost message
// can cost: a publication that failed (Redis down, a cluster failing over)
// is retried in the background for republishWindow; every (re)subscription,
// including go-redis' silent reconnects, drops every cached enforcer, since
// messages sent while this process was not subscribed are gone; and the
// enforcers reload after Options.MaxAge whatever happens.
type Invalidator struct {
	Redis     redis.UniversalClient // nil: local only
	Enforcers *Enforcers
	// OnChange runs for every change, local or remote (e.g. drop the tenant
	// registry cache); uuid.Nil means every tenant.
	OnChange func(tenantID uuid.UUID)

	mu      sync.Mutex
	pending map[uuid.UUID]time.Time // failed publications, by first failure
}

// Publish drops the tenant's cached state here and tells the other replicas.
func (iv *Invalidator) Publish(ctx context.Context, tenantID uuid.UUID) {
	iv.apply(tenantID)
	if iv.Redis == nil {
		return
	}
	if err := iv.publish(ctx, tenantID); err != nil {
		iv.mu.Lock()
		if iv.pending == nil {
			iv.pending = map[uuid.UUID]time.Time{}
		}
		if _, ok := iv.pending[tenantID]; !ok && len(iv.pending) < maxPendingRepublish {
			iv.pending[tenantID] = time.Now()
		}
		iv.mu.Unlock()
		slog.WarnContext(ctx, "publish invalidation; retrying in the background", "tenant_id", tenantID, "err", err)
	}
}

func (iv *Invalidator) publish(ctx context.Context, tenantID uuid.UUID) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	return iv.Redis.Publish(ctx, InvalidationChannel, tenantID.String()).Err()
}

// republish retries the failed publications, stopping at the first one
// that fails again (one publication's timeout per round while Redis is
// down, however many wait), and gives up on those older than
// republishWindow; it returns how many are still waiting.
func (iv *Invalidator) republish(ctx context.Context) int {
	iv.mu.Lock()
	due := make(map[uuid.UUID]time.Time, len(iv.pending))
	for id, first := range iv.pending {
		due[id] = first
	}
	iv.mu.Unlock()
	given, failing := 0, false
	var lastErr error
	for id, first := range due {
		if time.Since(first) >= republishWindow {
			given++ // every replica has reloaded it by now
		} else if failing {
			continue // Redis still fails: the next round tries again
		} else if err := iv.publish(ctx, id); err != nil {
			failing, lastErr = true, err
			continue
		}
		iv.mu.Lock()
		delete(iv.pending, id)
		iv.mu.Unlock()
	}
	if given > 0 {
		slog.WarnContext(ctx, "invalidations not published in time; the periodic reload covers them", "tenants", given, "err", lastErr)
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	return len(iv.pending)
}

func (iv *Invalidator) apply(tenantID uuid.UUID) {
	if tenantID == uuid.Nil {
		iv.Enforcers.InvalidateAll()
	} else {
		iv.Enforcers.Invalidate(tenantID)
	}
	if iv.OnChange != nil {
		iv.OnChange(tenantID)
	}
}

// Run listens for other replicas' changes, and retries failed
// publications, until ctx ends.
func (iv *Invalidator) Run(ctx context.Context) {
	if iv.Redis == nil {
		return
	}
	go func() {
		t := time.NewTicker(republishEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				iv.republish(ctx)
			}
		}
	}()
	for ctx.Err() == nil {
		sub := iv.Redis.Subscribe(ctx, InvalidationChannel)
		stop := context.AfterFunc(ctx, func() { sub.Close() })
		iv.listen(ctx, sub)
		stop()
		sub.Close()
	}
}

// listen reads the subscription until ctx ends or its connection went
// silent for good. go-redis reconnects and subscribes again by itself after
// a connection error; the server's confirmation of each subscription
// arrives here as a *redis.Subscription.
func (iv *Invalidator) listen(ctx context.Context, sub *redis.PubSub) {
	silent, failing := 0, false
	for {
		msg, err := sub.ReceiveTimeout(ctx, quietPing)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				if silent++; silent > 1 {
					slog.WarnContext(ctx, "invalidation subscription silent; subscribing again")
					return
				}
				_ = sub.Ping(ctx) // the pong proves the connection
				continue
			}
			if !failing {
				slog.WarnContext(ctx, "invalidation subscription lost; subscribing again", "err", err)
				failing = true
			}
			// On a cluster whose master failed, the slot map still names
			// it until the client re-reads the map.
			if c, ok := iv.Redis.(interface{ ReloadState(context.Context) }); ok {
				c.ReloadState(ctx)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		silent = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				// (Re)subscribed: whatever was published while this
				// process was not subscribed is lost.
				failing = false
				iv.apply(uuid.Nil)
			}
		case *redis.Message:
			if id, err := uuid.Parse(m.Payload); err == nil && id != uuid.Nil {
				iv.apply(id)
			}
		}
	}
}
