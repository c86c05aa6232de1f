package identity

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCache is a SessionCache in Redis, shared by every replica.
type RedisCache struct{ c redis.UniversalClient }

// NewRedisCache returns a SessionCache on c.
func NewRedisCache(c redis.UniversalClient) *RedisCache { return &RedisCache{c: c} }

func (r *RedisCache) Get(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	b, err := r.c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

func (r *RedisCache) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	return r.c.Set(ctx, key, val, ttl).Err()
}

// MemoryCache is the in-process SessionCache used when no Redis is configured
// (one replica only).
type MemoryCache struct {
	mu sync.Mutex
	m  map[string]memEntry
}

type memEntry struct {
	v   []byte
	exp time.Time
}

// NewMemoryCache returns an empty in-process cache.
func NewMemoryCache() *MemoryCache { return &MemoryCache{m: map[string]memEntry{}} }

func (m *MemoryCache) Get(_ context.Context, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[key]
	if !ok || time.Now().After(e.exp) {
		delete(m.m, key)
		return nil, false, nil
	}
	return e.v, true, nil
}

func (m *MemoryCache) Set(_ context.Context, key string, val []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.m) > 100_000 {
		clear(m.m)
	}
	m.m[key] = memEntry{v: val, exp: time.Now().Add(ttl)}
	return nil
}
