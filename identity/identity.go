// Package identity turns a request's credentials into a Principal using Ory
// Kratos, which owns registration, login and credentials: ProManage never sees
// a password. Verified sessions are cached under the sha256 of the token, in
// Redis (or an in-process map) for a few seconds that never outlive the
// session, and in process for one second: a session revoked in Kratos stops
// working within SharedTTL + LocalTTL (5 s by default) on every replica.
//
// It must never log or store a raw token, never accept a session it could not
// verify (Kratos down means 503, not a pass), and never imitate Kratos.
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	ory "github.com/ory/kratos-client-go"
	"golang.org/x/sync/singleflight"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Errors returned by Authenticate.
var (
	// ErrUnauthenticated: no credential, or Kratos says it is not a valid session.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrUnavailable: the credential could not be verified (Kratos unreachable).
	ErrUnavailable = errors.New("identity provider unavailable")
)

// Principal is the authenticated caller.
type Principal struct {
	ID        uuid.UUID `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	SessionID string    `json:"session_id"`
	ExpiresAt time.Time `json:"expires_at"`
	// IdentityUpdatedAt is the identity's updated_at in Kratos (zero if
	// unknown): profile writes apply only when newer.
	IdentityUpdatedAt time.Time `json:"identity_updated_at,omitzero"`
}

// Credential is what a request presented.
type Credential struct {
	// Token is a Kratos session token (Authorization: Bearer or X-Session-Token).
	Token string
	// Cookie is the value of the ory_kratos_session cookie.
	Cookie string
}

func (c Credential) cacheKey() string {
	h := sha256.New()
	if c.Token != "" {
		h.Write([]byte("t:" + c.Token))
	} else {
		h.Write([]byte("c:" + c.Cookie))
	}
	return "pm:sess:" + hex.EncodeToString(h.Sum(nil))
}

// SessionCache is the shared cache of verified sessions (Redis in production).
type SessionCache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
}

// Options configures an Authenticator.
type Options struct {
	// KratosPublicURL is Kratos' public API, e.g. http://127.0.0.1:4433.
	KratosPublicURL string
	// Cache is the shared session cache; nil uses an in-process map.
	Cache SessionCache
	// SharedTTL is how long a verified session is trusted from the shared
	// cache before Kratos is asked again (default DefaultSharedTTL,
	// maximum 60s). With LocalTTL it bounds how long a session revoked in
	// Kratos keeps working.
	SharedTTL time.Duration
	// LocalTTL caps the in-process cache entry (default DefaultLocalTTL).
	LocalTTL time.Duration
	// HTTPClient talks to Kratos (default: 5s timeout).
	HTTPClient *http.Client
	// DB is where first-seen identities are upserted into public.users.
	DB *gorm.DB
	// JWT, if set, verifies bearer tokens that look like JWTs (minted by
	// Kratos' session tokenizer) locally; without it such tokens are refused.
	JWT *JWTVerifier
	// KratosAdminURL, if set, is asked whether a JWT's session (its sid) is
	// still active, at most once per SharedTTL per session across replicas,
	// so a revoked session's JWTs stop working as fast as its token does.
	// Empty: a JWT is valid until it expires.
	KratosAdminURL string
}

// Default cache lifetimes: a revoked session is refused within their sum.
const (
	DefaultSharedTTL = 4 * time.Second
	DefaultLocalTTL  = time.Second
)

// Authenticator verifies credentials against Kratos.
type Authenticator struct {
	kratos    *ory.APIClient
	admin     *ory.APIClient // nil: JWT sessions are not re-checked
	cache     SessionCache
	sharedTTL time.Duration
	localTTL  time.Duration
	db        *gorm.DB
	jwt       *JWTVerifier
	now       func() time.Time

	mu     sync.Mutex
	local  map[string]localEntry
	seen   sync.Map // uuid -> email+"\x00"+name already upserted
	flight singleflight.Group

	readyMu      sync.Mutex
	readyChecked time.Time
	ready        bool
}

type localEntry struct {
	p       Principal
	expires time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(opts Options) *Authenticator {
	cfg := ory.NewConfiguration()
	cfg.Servers = ory.ServerConfigurations{{URL: opts.KratosPublicURL}}
	cfg.HTTPClient = opts.HTTPClient
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	a := &Authenticator{
		kratos:    ory.NewAPIClient(cfg),
		cache:     opts.Cache,
		sharedTTL: DefaultSharedTTL,
		localTTL:  DefaultLocalTTL,
		db:        opts.DB,
		jwt:       opts.JWT,
		now:       time.Now,
		local:     map[string]localEntry{},
	}
	if a.cache == nil {
		a.cache = NewMemoryCache()
	}
	if opts.KratosAdminURL != "" {
		acfg := ory.NewConfiguration()
		acfg.Servers = ory.ServerConfigurations{{URL: opts.KratosAdminURL}}
		acfg.HTTPClient = cfg.HTTPClient
		a.admin = ory.NewAPIClient(acfg)
	}
	if opts.SharedTTL > 0 {
		a.sharedTTL = min(opts.SharedTTL, 60*time.Second)
	}
	if opts.LocalTTL > 0 {
		a.localTTL = opts.LocalTTL
	}
	a.localTTL = min(a.localTTL, a.sharedTTL)
	return a
}

// Authenticate returns the caller of a credential. It returns
// ErrUnauthenticated for a missing, unknown, expired or revoked session and
// ErrUnavailable when Kratos cannot be asked. fresh skips the caches (for
// sensitive actions).
func (a *Authenticator) Authenticate(ctx context.Context, cred Credential, fresh bool) (*Principal, error) {
	if cred.Token == "" && cred.Cookie == "" {
		return nil, ErrUnauthenticated
	}
	if cred.Token != "" && LooksLikeJWT(cred.Token) {
		return a.AuthenticateJWT(ctx, nil, cred.Token, fresh)
	}
	key := cred.cacheKey()
	now := a.now()
	if !fresh {
		a.mu.Lock()
		e, ok := a.local[key]
		a.mu.Unlock()
		if ok && now.Before(e.expires) {
			p := e.p
			return &p, nil
		}
		if b, ok, err := a.cache.Get(ctx, key); err == nil && ok {
			var p Principal
			if json.Unmarshal(b, &p) == nil && now.Before(p.ExpiresAt) {
				a.remember(key, p, now)
				return &p, nil
			}
		} else if err != nil {
			// A cache outage must not fail authentication: ask Kratos.
			slog.WarnContext(ctx, "session cache unavailable", "err", err)
		}
	}
	if gate, ok := ctx.Value(verifyGateKey{}).(func() error); ok {
		if err := gate(); err != nil {
			return nil, err
		}
	}
	if fresh {
		return a.verifyAndCache(ctx, cred, key)
	}
	// Concurrent requests with one credential that missed the caches make
	// one Kratos call between them. The call runs on its own deadline,
	// detached from the first caller's cancellation, so its failure is
	// Kratos', not one request's.
	ch := a.flight.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
		defer cancel()
		return a.verifyAndCache(fctx, cred, key)
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		p := *res.Val.(*Principal)
		return &p, nil
	}
}

// verifyTimeout bounds one toSession call.
const verifyTimeout = 5 * time.Second

// verifyAndCache asks Kratos and caches a valid session in both caches.
func (a *Authenticator) verifyAndCache(ctx context.Context, cred Credential, key string) (*Principal, error) {
	p, err := a.verify(ctx, cred)
	if err != nil {
		return nil, err
	}
	if err := a.upsertUser(ctx, p); err != nil {
		return nil, err
	}
	now := a.now()
	ttl := min(a.sharedTTL, p.ExpiresAt.Sub(now))
	if ttl > 0 {
		if b, err := json.Marshal(p); err == nil {
			if err := a.cache.Set(ctx, key, b, ttl); err != nil {
				slog.WarnContext(ctx, "session cache unavailable", "err", err)
			}
		}
		a.remember(key, *p, now)
	}
	return p, nil
}

// AuthenticateJWT verifies a tokenizer JWT locally with v (nil: the one in
// Options; none at all: ErrUnauthenticated), checks that its session is
// still active in Kratos (when Options.KratosAdminURL is set; cached like a
// session token, so a revoked session's JWTs stop within the same bound;
// fresh skips the caches) and upserts its user.
func (a *Authenticator) AuthenticateJWT(ctx context.Context, v *JWTVerifier, tok string, fresh bool) (*Principal, error) {
	if v == nil {
		v = a.jwt
	}
	if v == nil {
		return nil, ErrUnauthenticated
	}
	p, err := v.Verify(ctx, tok)
	if err != nil {
		return nil, err
	}
	if err := a.checkSessionActive(ctx, p, fresh); err != nil {
		return nil, err
	}
	if err := a.upsertUser(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// checkSessionActive asks Kratos' admin API whether a JWT's session is
// still active, with the same caches (and so the same revocation bound) as
// session tokens. It returns ErrUnauthenticated for a revoked or unknown
// session and ErrUnavailable when Kratos cannot be asked.
func (a *Authenticator) checkSessionActive(ctx context.Context, p *Principal, fresh bool) error {
	if a.admin == nil {
		return nil
	}
	if p.SessionID == "" {
		return ErrUnauthenticated // Kratos' tokenizer always sets sid
	}
	sum := sha256.Sum256([]byte(p.SessionID))
	key := "pm:sid:" + hex.EncodeToString(sum[:])
	if !fresh {
		now := a.now()
		a.mu.Lock()
		e, ok := a.local[key]
		a.mu.Unlock()
		if ok && now.Before(e.expires) {
			return nil
		}
		if _, ok, err := a.cache.Get(ctx, key); err == nil && ok {
			a.remember(key, *p, now)
			return nil
		} else if err != nil {
			slog.WarnContext(ctx, "session cache unavailable", "err", err)
		}
	}
	flightKey := key // a sensitive action (fresh) asks Kratos itself
	if fresh {
		flightKey += ":fresh"
	}
	ch := a.flight.DoChan(flightKey, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
		defer cancel()
		sess, resp, err := a.admin.IdentityAPI.GetSession(fctx, p.SessionID).Expand([]string{"identity"}).Execute()
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			if resp != nil && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest) {
				return nil, ErrUnauthenticated
			}
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if sess == nil || sess.Identity == nil || sess.Identity.Id != p.ID.String() || (sess.Active != nil && !*sess.Active) ||
			sess.ExpiresAt != nil && !a.now().Before(*sess.ExpiresAt) {
			return nil, ErrUnauthenticated
		}
		now := a.now()
		if ttl := min(a.sharedTTL, p.ExpiresAt.Sub(now)); ttl > 0 {
			if err := a.cache.Set(fctx, key, []byte("1"), ttl); err != nil {
				slog.WarnContext(fctx, "session cache unavailable", "err", err)
			}
			a.remember(key, *p, now)
		}
		return nil, nil
	})
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	case res := <-ch:
		return res.Err
	}
}

func (a *Authenticator) remember(key string, p Principal, now time.Time) {
	exp := now.Add(a.localTTL)
	if p.ExpiresAt.Before(exp) {
		exp = p.ExpiresAt
	}
	a.mu.Lock()
	if len(a.local) > 100_000 { // bound memory under a flood of distinct tokens
		clear(a.local)
	}
	a.local[key] = localEntry{p: p, expires: exp}
	a.mu.Unlock()
}

func (a *Authenticator) verify(ctx context.Context, cred Credential) (*Principal, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	req := a.kratos.FrontendAPI.ToSession(ctx)
	if cred.Token != "" {
		req = req.XSessionToken(cred.Token)
	} else {
		req = req.Cookie("ory_kratos_session=" + cred.Cookie)
	}
	sess, resp, err := req.Execute()
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			// Kratos also answers 401 when it cannot read its own database:
			// a refusal counts only while Kratos says it is ready.
			if !a.kratosReady(ctx) {
				return nil, fmt.Errorf("%w: kratos answered %d but is not ready (its database may be down)", ErrUnavailable, resp.StatusCode)
			}
			return nil, ErrUnauthenticated
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if sess == nil || sess.Identity == nil || (sess.Active != nil && !*sess.Active) {
		return nil, ErrUnauthenticated
	}
	return principalOf(sess, a.now())
}

// kratosReady reports whether Kratos' /health/ready (which checks its
// database) answers 200, asking at most once a second.
func (a *Authenticator) kratosReady(ctx context.Context) bool {
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	if now := time.Now(); now.Sub(a.readyChecked) < time.Second {
		return a.ready
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, resp, err := a.kratos.MetadataAPI.IsReady(ctx).Execute()
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	a.ready, a.readyChecked = err == nil && resp != nil && resp.StatusCode == http.StatusOK, time.Now()
	return a.ready
}

func principalOf(sess *ory.Session, now time.Time) (*Principal, error) {
	id, err := uuid.Parse(sess.Identity.Id)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	p := &Principal{ID: id, SessionID: sess.Id}
	if sess.ExpiresAt != nil {
		p.ExpiresAt = sess.ExpiresAt.UTC()
	} else {
		p.ExpiresAt = now.Add(time.Minute)
	}
	if !now.Before(p.ExpiresAt) {
		return nil, ErrUnauthenticated
	}
	p.Email, p.Name = traitsOf(sess.Identity.Traits)
	if sess.Identity.UpdatedAt != nil {
		p.IdentityUpdatedAt = sess.Identity.UpdatedAt.UTC()
	}
	return p, nil
}

// traitsOf reads email and name from the identity traits of
// deploy/kratos/identity.schema.json (name may be a string or {first,last}).
func traitsOf(traits any) (email, name string) {
	m, _ := traits.(map[string]any)
	email, _ = m["email"].(string)
	switch n := m["name"].(type) {
	case string:
		name = n
	case map[string]any:
		first, _ := n["first"].(string)
		last, _ := n["last"].(string)
		name = first
		if last != "" {
			if name != "" {
				name += " "
			}
			name += last
		}
	}
	return email, name
}

// upsertUser records a first-seen identity (or changed profile) in public.users.
func (a *Authenticator) upsertUser(ctx context.Context, p *Principal) error {
	if a.db == nil {
		return nil
	}
	sig := p.Email + "\x00" + p.Name
	if v, ok := a.seen.Load(p.ID); ok && v.(string) == sig {
		return nil
	}
	if p.IdentityUpdatedAt.IsZero() && p.Email != "" {
		if err := UpsertUser(ctx, a.db, p.ID, p.Email, p.Name); err != nil {
			return err
		}
	} else if _, err := UpsertUserIfNewer(ctx, a.db, UserRecord{ID: p.ID, Email: p.Email, Name: p.Name, IdentityUpdatedAt: p.IdentityUpdatedAt}); err != nil {
		return err
	}
	a.seen.Store(p.ID, sig)
	return nil
}

// UpsertUser inserts or refreshes a user row. It is idempotent.
func UpsertUser(ctx context.Context, db *gorm.DB, id uuid.UUID, email, name string) error {
	now := time.Now().UTC()
	err := db.WithContext(ctx).Table("public.users").Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "id"}},
		DoUpdates: clause.Assignments(map[string]any{"email": email, "name": name, "updated_at": now}),
	}).Create(map[string]any{"id": id, "email": email, "name": name, "created_at": now, "updated_at": now}).Error
	if err != nil {
		return fmt.Errorf("upsert user: %w", err)
	}
	return nil
}

type verifyGateKey struct{}

// WithVerifyGate returns a context in which Authenticate calls gate before it
// asks Kratos about a credential it has not cached, and returns gate's error
// instead of asking. The API uses it to stop a client that keeps presenting
// invalid credentials from making a Kratos call per request, without
// slowing sessions that are already cached.
func WithVerifyGate(ctx context.Context, gate func() error) context.Context {
	return context.WithValue(ctx, verifyGateKey{}, gate)
}
