// Package identity turns a request's credentials into a Principal using Ory
// Kratos, which owns registration, login and credentials: ProManage never sees
// a password. Verified sessions are cached under the sha256 of the token, in
// Redis (or an in-process map) for a short TTL that never outlives the
// session, and in process for a few seconds.
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
	// SharedTTL caps the shared cache entry (default and maximum 60s).
	SharedTTL time.Duration
	// LocalTTL caps the in-process cache entry (default 3s; 0 keeps it).
	LocalTTL time.Duration
	// HTTPClient talks to Kratos (default: 5s timeout).
	HTTPClient *http.Client
	// DB is where first-seen identities are upserted into public.users.
	DB *gorm.DB
	// JWT, if set, verifies bearer tokens that look like JWTs (minted by
	// Kratos' session tokenizer) locally; without it such tokens are refused.
	JWT *JWTVerifier
}

// Authenticator verifies credentials against Kratos.
type Authenticator struct {
	kratos    *ory.APIClient
	cache     SessionCache
	sharedTTL time.Duration
	localTTL  time.Duration
	db        *gorm.DB
	jwt       *JWTVerifier
	now       func() time.Time

	mu    sync.Mutex
	local map[string]localEntry
	seen  sync.Map // uuid -> email+"\x00"+name already upserted

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
		sharedTTL: 60 * time.Second,
		localTTL:  3 * time.Second,
		db:        opts.DB,
		jwt:       opts.JWT,
		now:       time.Now,
		local:     map[string]localEntry{},
	}
	if a.cache == nil {
		a.cache = NewMemoryCache()
	}
	if opts.SharedTTL > 0 && opts.SharedTTL < a.sharedTTL {
		a.sharedTTL = opts.SharedTTL
	}
	if opts.LocalTTL > 0 {
		a.localTTL = opts.LocalTTL
	}
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
		return a.AuthenticateJWT(ctx, nil, cred.Token)
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
	p, err := a.verify(ctx, cred)
	if err != nil {
		return nil, err
	}
	if err := a.upsertUser(ctx, p); err != nil {
		return nil, err
	}
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
// Options; none at all: ErrUnauthenticated) and upserts its user. There is no
// fresh variant: a JWT cannot be revoked before it expires, so the tokenizer
// template's short ttl bounds how long a revoked session's JWT still works.
func (a *Authenticator) AuthenticateJWT(ctx context.Context, v *JWTVerifier, tok string) (*Principal, error) {
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
	if err := a.upsertUser(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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
