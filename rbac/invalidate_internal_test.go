package rbac

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Failed publications waiting for a retry are bounded in number and in age:
// beyond maxPendingRepublish tenants, or after republishWindow, a change
// relies on the periodic reload alone.
func TestRepublishQueueIsBounded(t *testing.T) {
	// Nothing listens on port 1: every publication fails at once.
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rc.Close()
	iv := &Invalidator{Redis: rc, Enforcers: &Enforcers{tenants: map[uuid.UUID]*tenantEnforcer{}}}
	ctx := context.Background()
	for range maxPendingRepublish + 50 {
		iv.Publish(ctx, uuid.New())
	}
	if n := len(iv.pending); n != maxPendingRepublish {
		t.Fatalf("%d publications pending, want the bound %d", n, maxPendingRepublish)
	}
	// Older than the window: dropped even though Redis still fails.
	iv.mu.Lock()
	for id := range iv.pending {
		iv.pending[id] = time.Now().Add(-republishWindow - time.Second)
	}
	iv.mu.Unlock()
	if left := iv.republish(ctx); left != 0 {
		t.Fatalf("%d publications still pending after the window", left)
	}
}
