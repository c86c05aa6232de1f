package rbac_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/rbac"
)

// changes records the tenants an Invalidator told its process about.
type changes struct {
	mu  sync.Mutex
	ids []uuid.UUID
}

func (c *changes) add(id uuid.UUID) { c.mu.Lock(); c.ids = append(c.ids, id); c.mu.Unlock() }

// count is how many times id was seen (uuid.Nil: "every tenant").
func (c *changes) count(id uuid.UUID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, x := range c.ids {
		if x == id {
			n++
		}
	}
	return n
}

func (c *changes) waitFor(t *testing.T, id uuid.UUID, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.count(id) < n {
		if time.Now().After(deadline) {
			c.mu.Lock()
			t.Fatalf("%s: not seen within 10 s (seen: %v)", what, slices.Clone(c.ids))
			c.mu.Unlock()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startInvalidator(t *testing.T, rc redis.UniversalClient) *changes {
	t.Helper()
	es, err := rbac.NewEnforcers(testenv.DB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := &changes{}
	iv := &rbac.Invalidator{Redis: rc, Enforcers: es, OnChange: seen.add}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { iv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return seen
}

// go-redis reconnects a subscription by itself after its connection broke;
// whatever was published in between is lost, so every resubscription
// drops every cached enforcer (OnChange(uuid.Nil)), and messages flow again.
func TestInvalidatorDropsEverythingOnResubscription(t *testing.T) {
	port := testenv.FreePort(t)
	testenv.StartRedis(t, port)
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { rc.Close() })
	seen := startInvalidator(t, rc)
	seen.waitFor(t, uuid.Nil, 1, "the first subscription")

	ctx := context.Background()
	pub := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { pub.Close() })
	a := uuid.New()
	pub.Publish(ctx, rbac.InvalidationChannel, a.String())
	seen.waitFor(t, a, 1, "a message")

	if err := pub.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	seen.waitFor(t, uuid.Nil, 2, "everything dropped after the subscription's connection was killed")
	b := uuid.New()
	waitSubscribers(t, pub)
	pub.Publish(ctx, rbac.InvalidationChannel, b.String())
	seen.waitFor(t, b, 1, "a message after resubscribing")
}

// A publication that failed is retried in the background until it
// succeeds, so another replica still hears of the change.
func TestInvalidatorRepublishesFailedPublications(t *testing.T) {
	port := testenv.FreePort(t)
	testenv.StartRedis(t, port)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { admin.Close() })
	// Until the password is lifted, this process's client is refused
	// (NOAUTH) while the other replica's, which knows it, listens.
	if err := admin.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	other := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, Password: "s3cret"})
	t.Cleanup(func() { other.Close() })
	sub := other.Subscribe(ctx, rbac.InvalidationChannel)
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	t.Cleanup(func() { rc.Close() })
	es, err := rbac.NewEnforcers(testenv.DB(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	local := &changes{}
	iv := &rbac.Invalidator{Redis: rc, Enforcers: es, OnChange: local.add}
	id := uuid.New()
	iv.Publish(ctx, id) // fails: NOAUTH
	if local.count(id) != 1 {
		t.Fatal("the local cache was not dropped at once")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { iv.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	time.Sleep(600 * time.Millisecond) // a few failed retries
	select {
	case m := <-sub.Channel():
		t.Fatalf("published while refused: %v", m)
	default:
	}
	if err := other.ConfigSet(ctx, "requirepass", "").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub.Channel():
		if m.Payload != id.String() {
			t.Fatalf("got %q, want %s", m.Payload, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed publication was not retried within 10 s")
	}
}

// waitSubscribers waits until the channel has a subscriber again.
func waitSubscribers(t *testing.T, c *redis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := c.PubSubNumSub(context.Background(), rbac.InvalidationChannel).Result()
		if err == nil && n[rbac.InvalidationChannel] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody subscribed again within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
