package api

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/internal/testenv"
)

// Both limiters count the same way: limit requests per window, then refuse
// until the window ends.
func TestLimiters(t *testing.T) {
	opt, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	if err := rc.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("test redis %s: %v (run `make test`)", testenv.RedisURL(), err)
	}
	for name, l := range map[string]Limiter{"Memory": NewMemoryLimiter(), "Redis": NewRedisLimiter(rc)} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			key := "test:" + uuid.NewString()
			const window = 400 * time.Millisecond
			for i := range 3 {
				res, err := l.Take(ctx, key, 3, window)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Allowed || res.Remaining != 2-i || res.Limit != 3 || res.Reset <= 0 || res.Reset > window {
					t.Fatalf("take %d: %+v", i, res)
				}
			}
			if res, _ := l.Take(ctx, key, 3, window); res.Allowed || res.Remaining != 0 {
				t.Fatalf("over the limit: %+v", res)
			}
			if res, _ := l.Take(ctx, "test:"+uuid.NewString(), 3, window); !res.Allowed {
				t.Fatal("another key shares the budget")
			}
			time.Sleep(window + 50*time.Millisecond)
			if res, _ := l.Take(ctx, key, 3, window); !res.Allowed || res.Remaining != 2 {
				t.Fatalf("new window: %+v", res)
			}
		})
	}
}

// A dead Redis costs no latency: the limiter errs at once (fail-open for the
// caller) and stops asking for a while.
func TestRedisLimiterDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	l := NewRedisLimiter(rc)
	start := time.Now()
	if _, err := l.Take(context.Background(), "k", 1, time.Minute); err == nil {
		t.Fatal("no error from a dead redis")
	}
	for range 100 {
		if _, err := l.Take(context.Background(), "k", 1, time.Minute); err == nil {
			t.Fatal("no error from a dead redis")
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("101 calls against a dead redis took %v", d)
	}
}
