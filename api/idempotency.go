package api

import (
	"bytes"
	"container/list"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"mime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/core"
)

// Idempotency-Key on POST (API.md "Cross-cutting"): the first successful
// answer to a key is kept for IdempotencyTTL and replayed, with
// Idempotent-Replayed: true, to a request with the same key and the same
// request (method, path and query, media type, body); the same key with
// another request answers 422 idempotency_key_reused. Keys are scoped to
// the authenticated identity and the tenant, so nobody can read another
// identity's stored answer. While the first request runs, its key is held
// by a lease: a concurrent request with the key waits up to
// idempotencyWait and then answers 409. A failed request (non-2xx)
// releases its key, since it changed nothing: a retry runs again.
const (
	// IdempotencyTTL is how long a first answer is kept.
	IdempotencyTTL = 24 * time.Hour
	// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
	MaxIdempotencyKeyLen = 255
	// maxStoredAnswer bounds the body kept per key. A larger answer, or
	// one marked Cache-Control: no-store, is not kept: a retry with the
	// key answers 409 (it never runs twice).
	maxStoredAnswer = 16 << 10
	// idempotencyLease is how long a running request holds its key
	// without renewing it; it renews every third of it, so a crashed
	// process frees its keys within a lease.
	idempotencyLease = time.Minute
	// idempotencyWait is how long a request waits for a concurrent one
	// with the same key to finish before answering 409.
	idempotencyWait = time.Second
	// idempotencyStoreTimeout bounds each call to the store.
	idempotencyStoreTimeout = 500 * time.Millisecond
	// CodeIdempotencyKeyReused is the problem code of a key reused with
	// another request (422).
	CodeIdempotencyKeyReused = "idempotency_key_reused"
)

// headerIdempotencyKey and headerReplayed are the request and answer headers.
const (
	headerIdempotencyKey = "Idempotency-Key"
	headerReplayed       = "Idempotent-Replayed"
)

// replayedHeaders are the answer headers kept with a stored answer.
var replayedHeaders = []string{fiber.HeaderContentType, fiber.HeaderLocation, fiber.HeaderETag}

// Idempotency configures Idempotency-Key handling.
type Idempotency struct {
	// Store keeps keys and answers; nil ignores Idempotency-Key.
	Store IdempotencyStore
	// KeysPerDay bounds the new keys one identity may use per 24 h (429
	// beyond), so one identity cannot fill the store; 0 = no bound.
	KeysPerDay int
}

// IdempotencyRecord is what the store keeps per key: a lease while the
// first request runs (Pending, with its owner's Token), then its answer.
type IdempotencyRecord struct {
	Pending bool   `json:"p,omitempty"`
	Token   string `json:"t,omitempty"`
	// Fingerprint is the sha256 of the request (see fingerprint); empty
	// in a lease of a streamed request, whose body is hashed while read.
	Fingerprint string `json:"f,omitempty"`
	// BodySize is the number of body bytes the fingerprint covers.
	BodySize int64             `json:"n,omitempty"`
	Status   int               `json:"s,omitempty"`
	Header   map[string]string `json:"h,omitempty"`
	Body     []byte            `json:"b,omitempty"`
	// BodyNotKept: the answer succeeded but its body was not kept (too
	// large, or marked no-store because it carries a secret shown once).
	BodyNotKept bool `json:"l,omitempty"`
}

// IdempotencyStore keeps Idempotency-Key records. Every method may fail
// (the store is down): the request then answers 503.
type IdempotencyStore interface {
	// Begin stores lease under key unless a record exists: it returns
	// (nil, nil) when the caller now holds the key, or the existing
	// record.
	Begin(ctx context.Context, key string, lease IdempotencyRecord, ttl time.Duration) (*IdempotencyRecord, error)
	// Extend renews the lease held with token.
	Extend(ctx context.Context, key, token string, ttl time.Duration) error
	// Complete replaces the lease held with token by the final record.
	Complete(ctx context.Context, key, token string, rec IdempotencyRecord, ttl time.Duration) error
	// Release drops the lease held with token.
	Release(ctx context.Context, key, token string) error
}

// idempotent runs next (a POST route's handler) under the request's
// Idempotency-Key, if it has one.
func (s *Server) idempotent(c *fiber.Ctx, next fiber.Handler) error {
	cfg := s.d.Access.Idempotency
	key := c.Get(headerIdempotencyKey)
	if key == "" || cfg.Store == nil {
		return next(c)
	}
	if !validIdempotencyKey(key) {
		return core.Invalid(core.FieldError{Field: headerIdempotencyKey,
			Message: "must be 1-" + strconv.Itoa(MaxIdempotencyKeyLen) + " visible ASCII characters (a UUID is a good key)"})
	}
	p := principal(c)
	var tenantID string
	if t := currentTenant(c); t != nil {
		tenantID = t.ID.String()
	}
	storeKey := idempotencyStoreKey(p.ID.String(), tenantID, key)
	sb, streamed := requestBody(c)
	fp := newFingerprint(c)
	if !streamed {
		fp.Write(c.Body())
	}
	var lease IdempotencyRecord
	lease.Pending, lease.Token = true, randomToken()
	if !streamed {
		lease.Fingerprint, lease.BodySize = fp.Sum(), fp.n
	}

	deadline := time.Now().Add(idempotencyWait)
	for {
		existing, err := s.storeCall(c, func(ctx context.Context) (*IdempotencyRecord, error) {
			return cfg.Store.Begin(ctx, storeKey, lease, idempotencyLease)
		})
		if err != nil {
			return err
		}
		if existing == nil {
			break // ours
		}
		if existing.Pending {
			if !streamed && existing.Fingerprint != "" && existing.Fingerprint != lease.Fingerprint {
				return keyReused()
			}
			if time.Now().After(deadline) {
				c.Set(fiber.HeaderRetryAfter, "1")
				return errf(core.ECONFLICT, "a request with this Idempotency-Key is still being processed; retry later")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got := lease.Fingerprint
		if streamed {
			if got, err = hashStreamedBody(sb, fp, existing.BodySize); err != nil {
				return err
			}
		}
		if got != existing.Fingerprint {
			return keyReused()
		}
		return replay(c, existing)
	}

	if err := s.limitNewKeys(c, p.ID.String()); err != nil {
		s.releaseKey(storeKey, lease.Token)
		return err
	}
	stop := s.renewLease(storeKey, lease.Token)
	defer stop() // also if next panics
	if streamed {
		sb.r = io.TeeReader(sb.r, fp)
	}
	err := next(c)
	stop()
	status := c.Response().StatusCode()
	if err != nil || status < 200 || status > 299 {
		s.releaseKey(storeKey, lease.Token)
		return err
	}
	rec := IdempotencyRecord{Status: status, Header: map[string]string{}}
	if streamed {
		// Hash what the handler left unread, so the fingerprint covers
		// the whole body (bounded like bodyHygiene's drain).
		if !sb.eof && !drain(sb, c.Context().Conn()) {
			c.Context().SetConnectionClose()
		}
	}
	rec.Fingerprint, rec.BodySize = fp.Sum(), fp.n
	for _, h := range replayedHeaders {
		if v := c.GetRespHeader(h); v != "" {
			rec.Header[h] = v
		}
	}
	// An answer marked no-store (a plugin's signing secret, shown once)
	// is never written to the store.
	noStore := strings.Contains(strings.ToLower(c.GetRespHeader(fiber.HeaderCacheControl)), "no-store")
	if body := c.Response().Body(); noStore || c.Response().IsBodyStream() || len(body) > maxStoredAnswer {
		rec.BodyNotKept = true
	} else {
		rec.Body = bytes.Clone(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), idempotencyStoreTimeout)
	defer cancel()
	if err := cfg.Store.Complete(ctx, storeKey, lease.Token, rec, IdempotencyTTL); err != nil {
		// The change is made and answered; a retry meets the lease until
		// it expires (409), then runs again. Rare: the store failed
		// between Begin and now.
		slog.ErrorContext(ctx, "idempotency: store the answer", "request_id", requestID(c), "err", err)
	}
	return nil
}

// limitNewKeys counts a new key against the identity's KeysPerDay (429
// beyond; a limiter failure lets it through, like every rate limit).
func (s *Server) limitNewKeys(c *fiber.Ctx, identity string) error {
	n, l := s.d.Access.Idempotency.KeysPerDay, s.d.Access.RateLimits.Limiter
	if n <= 0 || l == nil {
		return nil
	}
	res, err := l.Take(c.UserContext(), "ik:"+identity, n, IdempotencyTTL)
	if err != nil || res.Allowed {
		return nil
	}
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(1, int(res.Reset.Seconds()))))
	return errf(core.ERATELIMITED, "too many new Idempotency-Keys from your identity today ("+strconv.Itoa(n)+"); retry after the time in Retry-After")
}

func keyReused() error {
	return &core.Error{Code: CodeIdempotencyKeyReused,
		Message: "this Idempotency-Key was used with a different request (method, path, or body); use a new key for a new request"}
}

// storeCall runs one store call with its own short deadline; a store
// failure answers 503 (the request's idempotency cannot be guaranteed, so
// it must not run).
func (s *Server) storeCall(c *fiber.Ctx, f func(ctx context.Context) (*IdempotencyRecord, error)) (*IdempotencyRecord, error) {
	ctx, cancel := context.WithTimeout(c.UserContext(), idempotencyStoreTimeout)
	defer cancel()
	rec, err := f(ctx)
	if err != nil {
		slog.ErrorContext(ctx, "idempotency store unavailable", "request_id", requestID(c), "err", err)
		c.Set(fiber.HeaderRetryAfter, "1")
		return nil, errf(core.EUNAVAILABLE, "Idempotency-Key cannot be honoured right now; retry later")
	}
	return rec, nil
}

// renewLease extends the lease every third of its life until stop is
// called, so a long upload keeps its key while a crashed process's keys
// expire within a lease.
func (s *Server) renewLease(key, token string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(idempotencyLease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), idempotencyStoreTimeout)
				if err := s.d.Access.Idempotency.Store.Extend(ctx, key, token, idempotencyLease); err != nil {
					slog.Warn("idempotency: renew lease", "err", err)
				}
				cancel()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func (s *Server) releaseKey(key, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), idempotencyStoreTimeout)
	defer cancel()
	if err := s.d.Access.Idempotency.Store.Release(ctx, key, token); err != nil {
		slog.Warn("idempotency: release key", "err", err)
	}
}

// replay answers with a stored answer.
func replay(c *fiber.Ctx, rec *IdempotencyRecord) error {
	c.Set(headerReplayed, "true")
	if rec.BodyNotKept {
		if loc := rec.Header[fiber.HeaderLocation]; loc != "" {
			c.Location(loc)
		}
		return errf(core.ECONFLICT, "the first request with this Idempotency-Key succeeded (status "+strconv.Itoa(rec.Status)+
			") but its answer was not kept (too large, or it carried a secret shown only once); read the resource instead")
	}
	for h, v := range rec.Header {
		c.Set(h, v)
	}
	return c.Status(rec.Status).Send(rec.Body)
}

// hashStreamedBody reads an upload's body through fp, at most want+1
// bytes (more cannot match a stored body of want bytes), and returns its
// fingerprint ("" if it cannot match).
func hashStreamedBody(sb *streamedBody, fp *fingerprint, want int64) (string, error) {
	sb.r = io.TeeReader(sb.r, fp)
	n, err := io.Copy(io.Discard, io.LimitReader(sb, want+1))
	if err != nil {
		return "", core.Invalid(core.FieldError{Field: "body", Message: "the body could not be read"})
	}
	if n != want || !sb.eof && !atEOF(sb) {
		return "", nil
	}
	return fp.Sum(), nil
}

// atEOF reports whether the stream has no byte left.
func atEOF(sb *streamedBody) bool {
	var one [1]byte
	n, _ := sb.Read(one[:])
	return n == 0 && sb.eof
}

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > MaxIdempotencyKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// idempotencyStoreKey scopes a key to the identity and the tenant ("" for
// routes outside a tenant); the client's key never reaches the store as
// such.
func idempotencyStoreKey(identity, tenantID, key string) string {
	h := sha256.New()
	for _, part := range []string{identity, tenantID, key} {
		h.Write([]byte(strconv.Itoa(len(part)) + ":" + part))
	}
	return "pm:idem:" + hex.EncodeToString(h.Sum(nil))
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// fingerprint hashes a request: its method, path and query, media type
// and body. A multipart body's boundary is replaced by a constant while
// hashing, since clients pick a new random boundary for every request,
// retries included. It hashes a stream as it is read (an upload is never
// buffered): Write may be called with any split of the body.
type fingerprint struct {
	h       hash.Hash
	delim   []byte // "--" + boundary; nil unless multipart
	carry   []byte // the last len(delim)-1 bytes, which may start a delimiter
	scratch []byte
	n       int64
}

func newFingerprint(c *fiber.Ctx) *fingerprint {
	return newRequestFingerprint(c.Method(), c.OriginalURL(), c.Get(fiber.HeaderContentType))
}

func newRequestFingerprint(method, uri, contentType string) *fingerprint {
	f := &fingerprint{h: sha256.New()}
	mt, params, _ := mime.ParseMediaType(contentType)
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] != "" {
		f.delim = []byte("--" + params["boundary"])
	}
	fmt.Fprintf(f.h, "%s\n%s\n%s\n", method, uri, mt)
	return f
}

func (f *fingerprint) Write(p []byte) (int, error) {
	f.n += int64(len(p))
	if f.delim == nil {
		return f.h.Write(p)
	}
	f.scratch = append(append(f.scratch[:0], f.carry...), p...)
	buf := f.scratch
	for {
		i := bytes.Index(buf, f.delim)
		if i < 0 {
			break
		}
		f.h.Write(buf[:i])
		f.h.Write([]byte("--\x00boundary\x00"))
		buf = buf[i+len(f.delim):]
	}
	keep := min(len(buf), len(f.delim)-1)
	f.h.Write(buf[:len(buf)-keep])
	f.carry = append(f.carry[:0], buf[len(buf)-keep:]...)
	return len(p), nil
}

// Sum returns the fingerprint of everything written (hex).
func (f *fingerprint) Sum() string {
	h := f.h
	if len(f.carry) > 0 {
		h.Write(f.carry)
		f.carry = f.carry[:0]
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RedisIdempotencyStore keeps records in Redis, shared by every replica.
// Lease changes are compare-and-set on the owner's token (Lua, one round
// trip each).
type RedisIdempotencyStore struct{ c redis.UniversalClient }

// NewRedisIdempotencyStore returns a store on c.
func NewRedisIdempotencyStore(c redis.UniversalClient) *RedisIdempotencyStore {
	return &RedisIdempotencyStore{c: c}
}

var (
	idemBegin = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
`)
	// idemOwned: ARGV[1] is the owner's token; then the action.
	idemOwned = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, r = pcall(cjson.decode, v)
if not ok or not r['p'] or r['t'] ~= ARGV[1] then return 0 end
if ARGV[2] == 'extend' then redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif ARGV[2] == 'complete' then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
else redis.call('DEL', KEYS[1]) end
return 1
`)
)

func (r *RedisIdempotencyStore) Begin(ctx context.Context, key string, lease IdempotencyRecord, ttl time.Duration) (*IdempotencyRecord, error) {
	b, err := json.Marshal(lease)
	if err != nil {
		return nil, err
	}
	v, err := idemBegin.Run(ctx, r.c, []string{key}, string(b), ttl.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("idempotency begin: %w", err)
	}
	var rec IdempotencyRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return nil, fmt.Errorf("idempotency begin: decode: %w", err)
	}
	return &rec, nil
}

func (r *RedisIdempotencyStore) owned(ctx context.Context, key, token, action string, ttl time.Duration, val string) error {
	if err := idemOwned.Run(ctx, r.c, []string{key}, token, action, ttl.Milliseconds(), val).Err(); err != nil {
		return fmt.Errorf("idempotency %s: %w", action, err)
	}
	return nil
}

func (r *RedisIdempotencyStore) Extend(ctx context.Context, key, token string, ttl time.Duration) error {
	return r.owned(ctx, key, token, "extend", ttl, "")
}

func (r *RedisIdempotencyStore) Complete(ctx context.Context, key, token string, rec IdempotencyRecord, ttl time.Duration) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return r.owned(ctx, key, token, "complete", ttl, string(b))
}

func (r *RedisIdempotencyStore) Release(ctx context.Context, key, token string) error {
	return r.owned(ctx, key, token, "release", 0, "")
}

// MemoryIdempotencyStore is the in-process store used without Redis (one
// replica). It holds at most MaxEntries records and MaxBytes of answers;
// beyond either, the oldest records are dropped first (a retry of a
// dropped key runs again).
type MemoryIdempotencyStore struct {
	MaxEntries int
	MaxBytes   int

	mu    sync.Mutex
	m     map[string]*list.Element
	order *list.List // oldest first
	bytes int
	now   func() time.Time
}

type memIdem struct {
	key     string
	rec     IdempotencyRecord
	expires time.Time
	size    int
}

// NewMemoryIdempotencyStore returns an empty store with the default bounds
// (10,000 records, 32 MiB of answers).
func NewMemoryIdempotencyStore() *MemoryIdempotencyStore {
	return &MemoryIdempotencyStore{MaxEntries: 10_000, MaxBytes: 32 << 20, m: map[string]*list.Element{}, order: list.New(), now: time.Now}
}

func (s *MemoryIdempotencyStore) Begin(_ context.Context, key string, lease IdempotencyRecord, ttl time.Duration) (*IdempotencyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		it := e.Value.(*memIdem)
		if s.now().Before(it.expires) {
			rec := it.rec
			return &rec, nil
		}
		s.remove(e)
	}
	s.put(key, lease, ttl)
	return nil, nil
}

func (s *MemoryIdempotencyStore) owned(key, token string) (*list.Element, bool) {
	e, ok := s.m[key]
	if !ok {
		return nil, false
	}
	it := e.Value.(*memIdem)
	return e, it.rec.Pending && it.rec.Token == token && s.now().Before(it.expires)
}

func (s *MemoryIdempotencyStore) Extend(_ context.Context, key, token string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.owned(key, token); ok {
		e.Value.(*memIdem).expires = s.now().Add(ttl)
	}
	return nil
}

func (s *MemoryIdempotencyStore) Complete(_ context.Context, key, token string, rec IdempotencyRecord, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.owned(key, token); ok {
		s.remove(e)
		s.put(key, rec, ttl)
	}
	return nil
}

func (s *MemoryIdempotencyStore) Release(_ context.Context, key, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.owned(key, token); ok {
		s.remove(e)
	}
	return nil
}

// put adds a record; when a bound would be exceeded it first drops expired
// records, then the oldest ones. Callers hold mu.
func (s *MemoryIdempotencyStore) put(key string, rec IdempotencyRecord, ttl time.Duration) {
	size := len(rec.Body) + len(key) + 256
	now := s.now()
	full := func() bool { return s.order.Len() >= s.MaxEntries || s.bytes+size > s.MaxBytes }
	if full() { // expired records go first
		for e := s.order.Front(); e != nil; {
			next := e.Next()
			if !now.Before(e.Value.(*memIdem).expires) {
				s.remove(e)
			}
			e = next
		}
	}
	for s.order.Len() > 0 && full() {
		s.remove(s.order.Front())
	}
	s.m[key] = s.order.PushBack(&memIdem{key: key, rec: rec, expires: now.Add(ttl), size: size})
	s.bytes += size
}

func (s *MemoryIdempotencyStore) remove(e *list.Element) {
	it := e.Value.(*memIdem)
	s.order.Remove(e)
	delete(s.m, it.key)
	s.bytes -= it.size
}
