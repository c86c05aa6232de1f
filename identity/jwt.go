package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

// JWTOptions configures the verifier of JWTs minted by Kratos' session
// tokenizer (toSession?tokenize_as=<template>).
type JWTOptions struct {
	// JWKSURL holds the PUBLIC keys the tokenizer signs with: file://path
	// (relative to the working directory, or file:///absolute) or
	// http(s)://. Required.
	JWKSURL string
	// Issuer must equal the token's iss: Kratos sets it to its public base
	// URL. A trailing slash is ignored on both sides. Required.
	Issuer string
	// Audience, if set, must be one of the token's aud values (the claims
	// mapper sets aud).
	Audience string
	// Leeway tolerates clock skew on exp, nbf and iat (default 5s, max 1m).
	Leeway time.Duration
	// RefreshInterval is the minimum time between two fetches of the JWKS
	// when a token names an unknown kid (default 30s); the set is also
	// re-read every 10 minutes (key rotation).
	RefreshInterval time.Duration
	// HTTPClient fetches an http(s) JWKS (default: 5s timeout).
	HTTPClient *http.Client
}

// JWTVerifier verifies tokenizer JWTs locally: signature against the
// configured JWKS (ES256 and EdDSA only, so alg=none and HS* never verify),
// kid must be known, iss, aud, exp and nbf checked. Verified tokens are cached
// by hash until they expire, or until their signing key leaves the JWKS. A
// JWT cannot be revoked before its exp, so the tokenizer template's ttl is the
// revocation delay (removing a key from the JWKS revokes its tokens within
// the refresh period).
type JWTVerifier struct {
	o   JWTOptions
	now func() time.Time

	mu        sync.Mutex
	keys      map[string]jose.JSONWebKey // by kid, public keys only
	fetchedAt time.Time
	lastTry   time.Time

	cacheMu sync.Mutex
	cache   map[[32]byte]cachedJWT
}

// cachedJWT is a verified token: its caller and the kid that signed it (a
// hit is honoured only while the JWKS still holds that key).
type cachedJWT struct {
	p   Principal
	kid string
}

// Allowed signature algorithms. Anything else (none, HS256, RS256, ...) fails
// at parse time, before any key is looked at.
var jwtAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

const jwksMaxBytes = 1 << 20

// NewJWTVerifier returns a verifier and loads the JWKS once. A JWKS that
// cannot be read at start is an error for file:// URLs (a typo should stop
// the process) and only a warning for http(s):// (the issuer may start
// later); it is fetched again on demand.
func NewJWTVerifier(ctx context.Context, o JWTOptions) (*JWTVerifier, error) {
	if o.JWKSURL == "" || o.Issuer == "" {
		return nil, errors.New("jwt verifier: a JWKS URL and an issuer are required")
	}
	if o.Leeway <= 0 {
		o.Leeway = 5 * time.Second
	}
	o.Leeway = min(o.Leeway, time.Minute)
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 30 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	v := &JWTVerifier{o: o, now: time.Now, keys: map[string]jose.JSONWebKey{}, cache: map[[32]byte]cachedJWT{}}
	if err := v.refresh(ctx); err != nil {
		if strings.HasPrefix(o.JWKSURL, "file://") {
			return nil, err
		}
		slog.WarnContext(ctx, "JWKS not loaded yet; JWTs are refused until it is", "url", o.JWKSURL, "err", err)
	}
	return v, nil
}

// LooksLikeJWT reports whether tok has the shape of a JWS compact
// serialization: three base64url segments whose first decodes to a JSON
// object. Kratos session tokens (ory_st_...) never do.
func LooksLikeJWT(tok string) bool {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	for _, p := range parts {
		if strings.ContainsFunc(p, func(r rune) bool {
			return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) {
			return false
		}
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	return err == nil && json.Valid(h) && strings.HasPrefix(strings.TrimSpace(string(h)), "{")
}

// jwtClaims are the registered claims plus what deploy/kratos's claims
// mapper adds.
type jwtClaims struct {
	jwt.Claims
	SessionID string `json:"sid"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	// IdentityUpdatedAt is the identity's updated_at (RFC 3339).
	IdentityUpdatedAt time.Time `json:"identity_updated_at"`
}

// Verify returns the caller a JWT names, or ErrUnauthenticated for a token
// that is malformed, signed with another algorithm or an unknown key, not
// from the configured issuer or audience, expired or not yet valid.
func (v *JWTVerifier) Verify(ctx context.Context, tok string) (*Principal, error) {
	now := v.now()
	sum := sha256.Sum256([]byte(tok))
	v.cacheMu.Lock()
	ce, ok := v.cache[sum]
	v.cacheMu.Unlock()
	if ok {
		// The key must still be published: a key withdrawn from the JWKS
		// (compromised, rotated out) no longer vouches for its tokens.
		if now.Before(ce.p.ExpiresAt.Add(v.o.Leeway)) {
			if _, known := v.key(ctx, ce.kid); known {
				p := ce.p
				return &p, nil
			}
		}
		v.cacheMu.Lock()
		delete(v.cache, sum)
		v.cacheMu.Unlock()
		return nil, ErrUnauthenticated
	}
	parsed, err := jwt.ParseSigned(tok, jwtAlgorithms)
	if err != nil || len(parsed.Headers) != 1 {
		return nil, ErrUnauthenticated
	}
	h := parsed.Headers[0]
	if h.KeyID == "" {
		return nil, ErrUnauthenticated
	}
	key, ok := v.key(ctx, h.KeyID)
	if !ok || !keyFits(key, h.Algorithm) {
		return nil, ErrUnauthenticated
	}
	var c jwtClaims
	if err := parsed.Claims(key.Key, &c); err != nil {
		return nil, ErrUnauthenticated
	}
	exp := jwt.Expected{Time: now}
	if v.o.Audience != "" {
		exp.AnyAudience = jwt.Audience{v.o.Audience}
	}
	if err := c.ValidateWithLeeway(exp, v.o.Leeway); err != nil {
		return nil, ErrUnauthenticated
	}
	if c.Expiry == nil || strings.TrimSuffix(c.Issuer, "/") != strings.TrimSuffix(v.o.Issuer, "/") {
		return nil, ErrUnauthenticated
	}
	id, err := uuid.Parse(c.Subject)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	p := Principal{ID: id, Email: c.Email, Name: c.Name, SessionID: c.SessionID, ExpiresAt: c.Expiry.Time().UTC(),
		IdentityUpdatedAt: c.IdentityUpdatedAt.UTC()}
	v.cacheMu.Lock()
	if len(v.cache) > 100_000 { // bound memory under a flood of distinct tokens
		clear(v.cache)
	}
	v.cache[sum] = cachedJWT{p: p, kid: h.KeyID}
	v.cacheMu.Unlock()
	return &p, nil
}

// keyFits checks the key against the token's alg, so that a key published
// for one algorithm is never used with another.
func keyFits(k jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch pk := k.Key.(type) {
	case *ecdsa.PublicKey:
		return alg == string(jose.ES256) && pk.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == string(jose.EdDSA)
	}
	return false
}

// key returns the public key with kid, fetching the JWKS again (at most once
// per RefreshInterval) when it is unknown or the set is old.
func (v *JWTVerifier) key(ctx context.Context, kid string) (jose.JSONWebKey, bool) {
	v.mu.Lock()
	k, ok := v.keys[kid]
	stale := v.now().Sub(v.fetchedAt) > 10*time.Minute
	canTry := v.now().Sub(v.lastTry) >= v.o.RefreshInterval
	v.mu.Unlock()
	if ok && !stale {
		return k, true
	}
	if canTry {
		if err := v.refresh(ctx); err != nil {
			slog.WarnContext(ctx, "refresh JWKS", "url", v.o.JWKSURL, "err", err)
		}
		v.mu.Lock()
		k, ok = v.keys[kid]
		v.mu.Unlock()
	}
	return k, ok
}

func (v *JWTVerifier) refresh(ctx context.Context) error {
	v.mu.Lock()
	v.lastTry = v.now()
	v.mu.Unlock()
	b, err := readJWKS(ctx, v.o.HTTPClient, v.o.JWKSURL)
	if err != nil {
		return err
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.keys, v.fetchedAt = keys, v.now()
	v.mu.Unlock()
	return nil
}

func readJWKS(ctx context.Context, c *http.Client, u string) ([]byte, error) {
	switch {
	case strings.HasPrefix(u, "file://"):
		f, err := os.Open(strings.TrimPrefix(u, "file://"))
		if err != nil {
			return nil, fmt.Errorf("read JWKS: %w", err)
		}
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, jwksMaxBytes))
	case strings.HasPrefix(u, "https://"), strings.HasPrefix(u, "http://"):
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("fetch JWKS: %w", err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetch JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetch JWKS: status %d", resp.StatusCode)
		}
		return io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes))
	}
	return nil, fmt.Errorf("JWKS URL must be file://, http:// or https://")
}

// LoadJWKS reads a JWKS from a file:// or http(s):// URL and returns its
// usable signing keys (public halves), as the verifier would load them.
func LoadJWKS(ctx context.Context, url string) ([]jose.JSONWebKey, error) {
	b, err := readJWKS(ctx, &http.Client{Timeout: 5 * time.Second}, url)
	if err != nil {
		return nil, err
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return nil, err
	}
	out := make([]jose.JSONWebKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, k)
	}
	return out, nil
}

// parseJWKS keeps the signing keys usable with ES256 or EdDSA, as public
// keys (a set that carries private parts is accepted, but only its public
// halves are kept in memory).
func parseJWKS(b []byte) (map[string]jose.JSONWebKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	keys := map[string]jose.JSONWebKey{}
	for _, k := range set.Keys {
		if k.KeyID == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		pub := k.Public()
		if !pub.Valid() {
			continue
		}
		if keyFits(pub, string(jose.ES256)) || keyFits(pub, string(jose.EdDSA)) {
			keys[k.KeyID] = pub
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("parse JWKS: no ES256 or EdDSA signing key with a kid")
	}
	return keys, nil
}
