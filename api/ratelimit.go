package api

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/core"
)

// LimitResult is the state of one rate-limit window after a request.
type LimitResult struct {
	Allowed   bool
	Limit     int
	Remaining int
	// Reset is the time until the window ends.
	Reset time.Duration
}

// Limiter counts requests per key in fixed windows. An error means the
// count is unknown: the caller serves the request anyway (fail-open).
type Limiter interface {
	Take(ctx context.Context, key string, limit int, window time.Duration) (LimitResult, error)
}

// RateLimits configures the per-identity and per-tenant limits.
type RateLimits struct {
	// Limiter counts; nil disables rate limiting.
	Limiter Limiter
	// User and Tenant are requests per Window for one identity and for one
	// tenant (all its members together); 0 disables that limit.
	User, Tenant int
	// AuthFailures is how many failed authentications one client address
	// may cause per Window; past it, credentials from that address that
	// are not already cached are refused with 429 without asking Kratos.
	// 0 disables it.
	AuthFailures int
	Window       time.Duration
	// TenantCreates is how many tenant creations (attempts, whatever their
	// answer) one identity, and one client address, may make per
	// TenantCreateWindow (default an hour); 0 disables. It also bounds how
	// fast anyone can probe which slugs are taken (409).
	TenantCreates      int
	TenantCreateWindow time.Duration
}

// fixedWindow increments the window's counter, starts its expiry on the
// first hit (and repairs a counter without one), and returns the count and
// the milliseconds left. One round trip, atomic.
var fixedWindow = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
`)

// RedisLimiter is a fixed-window Limiter in Redis, shared by every replica.
// When Redis fails it stops asking for a second (so a dead Redis costs no
// latency) and the API serves without limits: availability beats
// throttling, and authentication does not depend on it.
type RedisLimiter struct {
	c         redis.UniversalClient
	skipUntil atomic.Int64 // unix nanos
	lastLog   atomic.Int64
}

// NewRedisLimiter returns a Limiter on c.
func NewRedisLimiter(c redis.UniversalClient) *RedisLimiter { return &RedisLimiter{c: c} }

// Take counts one request against key.
func (l *RedisLimiter) Take(ctx context.Context, key string, limit int, window time.Duration) (LimitResult, error) {
	now := time.Now()
	if now.UnixNano() < l.skipUntil.Load() {
		return LimitResult{}, errLimiterDown
	}
	ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	res, err := fixedWindow.Run(ctx, l.c, []string{"pm:rl:" + key}, window.Milliseconds()).Int64Slice()
	if err != nil || len(res) != 2 {
		l.skipUntil.Store(now.Add(time.Second).UnixNano())
		if last := l.lastLog.Load(); now.UnixNano()-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now.UnixNano()) {
			slog.WarnContext(ctx, "rate limiter unavailable: serving without limits", "err", err)
		}
		if err == nil {
			err = errLimiterDown
		}
		return LimitResult{}, fmt.Errorf("rate limit: %w", err)
	}
	n, ttl := int(res[0]), time.Duration(res[1])*time.Millisecond
	return LimitResult{Allowed: n <= limit, Limit: limit, Remaining: max(0, limit-n), Reset: ttl}, nil
}

var errLimiterDown = fmt.Errorf("limiter unavailable")

// MemoryLimiter is the in-process Limiter used without Redis (one replica).
type MemoryLimiter struct {
	mu sync.Mutex
	m  map[string]*memWindow
}

type memWindow struct {
	n     int
	reset time.Time
}

// NewMemoryLimiter returns an empty in-process Limiter.
func NewMemoryLimiter() *MemoryLimiter { return &MemoryLimiter{m: map[string]*memWindow{}} }

// Take counts one request against key.
func (l *MemoryLimiter) Take(_ context.Context, key string, limit int, window time.Duration) (LimitResult, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.m[key]
	if w == nil || !now.Before(w.reset) {
		if len(l.m) > 100_000 { // bound memory: drop finished windows
			for k, v := range l.m {
				if !now.Before(v.reset) {
					delete(l.m, k)
				}
			}
		}
		w = &memWindow{reset: now.Add(window)}
		l.m[key] = w
	}
	w.n++
	return LimitResult{Allowed: w.n <= limit, Limit: limit, Remaining: max(0, limit-w.n), Reset: w.reset.Sub(now)}, nil
}

const localLimit = "pm.ratelimit"

// rateLimit counts the request against one limit. The RateLimit-* headers
// describe the tightest limit that applies to the request; over a limit the
// answer is 429 with Retry-After. A limiter error lets the request through.
func (s *Server) rateLimit(c *fiber.Ctx, key string, limit int) error {
	return s.rateLimitWindow(c, key, limit, s.d.Access.RateLimits.Window)
}

// rateLimitWindow is rateLimit with its own window (default a minute).
func (s *Server) rateLimitWindow(c *fiber.Ctx, key string, limit int, window time.Duration) error {
	rl := s.d.Access.RateLimits
	if rl.Limiter == nil || limit <= 0 {
		return nil
	}
	if window <= 0 {
		window = time.Minute
	}
	res, err := rl.Limiter.Take(c.UserContext(), key, limit, window)
	if err != nil {
		return nil // fail-open, logged by the limiter
	}
	if prev, ok := c.Locals(localLimit).(LimitResult); !ok || res.Remaining < prev.Remaining || !res.Allowed {
		c.Locals(localLimit, res)
		reset := int(math.Ceil(res.Reset.Seconds()))
		c.Set("RateLimit-Limit", strconv.Itoa(res.Limit))
		c.Set("RateLimit-Remaining", strconv.Itoa(res.Remaining))
		c.Set("RateLimit-Reset", strconv.Itoa(reset))
		if !res.Allowed {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, reset)))
		}
	}
	if !res.Allowed {
		return errf(core.ERATELIMITED, "too many requests: retry after the time in Retry-After")
	}
	return nil
}

// authGate refuses to verify a new credential from a client address that
// has failed authentication too often in the current window.
func (s *Server) authGate(c *fiber.Ctx, ip string) error {
	ip = addressKey(ip)
	s.authBlockMu.Lock()
	until, ok := s.authBlocked[ip]
	s.authBlockMu.Unlock()
	if left := time.Until(until); ok && left > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, int(math.Ceil(left.Seconds())))))
		return &core.Error{Code: core.ERATELIMITED, Message: "too many failed authentications from your address: retry after the time in Retry-After"}
	}
	return nil
}

// countAuthFailure counts a failed authentication against the client
// address; past the limit it blocks the address until the window ends and
// answers 429 (with Retry-After) instead of 401.
func (s *Server) countAuthFailure(c *fiber.Ctx, ip string) error {
	rl := s.d.Access.RateLimits
	if rl.Limiter == nil || rl.AuthFailures <= 0 {
		return nil
	}
	window := rl.Window
	if window <= 0 {
		window = time.Minute
	}
	ip = addressKey(ip)
	res, err := rl.Limiter.Take(c.UserContext(), "af:"+ip, rl.AuthFailures, window)
	if err != nil || res.Allowed {
		return nil // fail-open for limits
	}
	s.authBlockMu.Lock()
	if len(s.authBlocked) > 100_000 { // bound memory under a spray of addresses
		clear(s.authBlocked)
	}
	s.authBlocked[ip] = time.Now().Add(res.Reset)
	s.authBlockMu.Unlock()
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, int(math.Ceil(res.Reset.Seconds())))))
	return &core.Error{Code: core.ERATELIMITED, Message: "too many failed authentications from your address: retry after the time in Retry-After"}
}

// parseTrustedProxies parses IPs and CIDRs; an entry that is neither is
// logged and ignored.
func parseTrustedProxies(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range list {
		if p, err := netip.ParsePrefix(v); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(v); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			slog.Warn("trusted proxy ignored: not an IP or CIDR", "value", v)
		}
	}
	return out
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP is the address of the client, for per-address limits and logs:
// the peer, or, when the peer is a trusted proxy, the right-most
// X-Forwarded-For address that is not itself a trusted proxy. Each proxy
// appends the address it saw, so everything left of that hop is whatever
// the client sent and may be forged.
func (s *Server) clientIP(c *fiber.Ctx) string {
	peer, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return c.Context().RemoteIP().String()
	}
	cur := peer.Unmap()
	if len(s.trusted) == 0 || !s.trustedProxy(cur) {
		return cur.String()
	}
	var hops []string
	for _, h := range c.Request().Header.PeekAll(fiber.HeaderXForwardedFor) {
		hops = append(hops, strings.Split(string(h), ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // not written by a proxy we trust: the last trusted hop is all we know
		}
		cur = a.Unmap().WithZone("")
		if !s.trustedProxy(cur) {
			break
		}
	}
	return cur.String()
}

// addressKey is what failed authentications are counted against: the IPv4
// address, or the /64 of an IPv6 address (one subscriber usually holds a
// whole /64 and could otherwise rotate through it).
func addressKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// limitTenantCreation counts a tenant creation against the caller's
// identity and client address (addressKey, as for failed
// authentications): 429 with Retry-After past RateLimits.TenantCreates.
func (s *Server) limitTenantCreation(c *fiber.Ctx) error {
	rl := s.d.Access.RateLimits
	window := rl.TenantCreateWindow
	if window <= 0 {
		window = time.Hour
	}
	if err := s.rateLimitWindow(c, "tc:u:"+principal(c).ID.String(), rl.TenantCreates, window); err != nil {
		return err
	}
	return s.rateLimitWindow(c, "tc:a:"+addressKey(s.clientIP(c)), rl.TenantCreates, window)
}
