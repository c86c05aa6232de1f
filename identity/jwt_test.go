package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
)

func TestLooksLikeJWT(t *testing.T) {
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256"}`))
	for tok, want := range map[string]bool{
		hdr + ".e30.c2ln":               true,
		hdr + ".e30.":                   true, // alg=none shape: still goes to the verifier (and fails)
		"ory_st_abcdefABCDEF0123456789": false,
		"a.b":                           false,
		hdr + ".e30.sig.extra":          false,
		"bm90IGpzb24.e30.c2ln":          false, // "not json"
		hdr + ".e3+.c2ln":               false,
		base64.RawURLEncoding.EncodeToString([]byte(`"x"`)) + ".e30.c2ln": false,
	} {
		if got := LooksLikeJWT(tok); got != want {
			t.Errorf("LooksLikeJWT(%q) = %v, want %v", tok, got, want)
		}
	}
}

type testKeys struct {
	es, ed jose.JSONWebKey // private
	url    string          // file:// of the public set
}

func newKeys(t *testing.T) testKeys {
	t.Helper()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	k := testKeys{
		es: jose.JSONWebKey{Key: ec, KeyID: "es", Algorithm: "ES256", Use: "sig"},
		ed: jose.JSONWebKey{Key: ed, KeyID: "ed", Algorithm: "EdDSA", Use: "sig"},
	}
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.es.Public(), k.ed.Public()}})
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	k.url = "file://" + p
	return k
}

func mint(t *testing.T, k jose.JSONWebKey, c any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestJWTVerifier(t *testing.T) {
	k := newKeys(t)
	ctx := context.Background()
	v, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: k.url, Issuer: "http://kratos.test/", Audience: "promanage"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sub := uuid.New()
	claims := func(f func(c *jwtClaims)) jwtClaims {
		c := jwtClaims{Claims: jwt.Claims{Issuer: "http://kratos.test", Subject: sub.String(), Audience: jwt.Audience{"promanage"},
			Expiry: jwt.NewNumericDate(now.Add(time.Minute)), NotBefore: jwt.NewNumericDate(now)}, Email: "a@example.com", SessionID: "s1"}
		if f != nil {
			f(&c)
		}
		return c
	}
	for name, alg := range map[string]jose.JSONWebKey{"ES256": k.es, "EdDSA": k.ed} {
		t.Run(name, func(t *testing.T) {
			p, err := v.Verify(ctx, mint(t, alg, claims(nil)))
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != sub || p.Email != "a@example.com" || p.SessionID != "s1" || !p.ExpiresAt.Equal(now.Add(time.Minute).Truncate(time.Second)) {
				t.Fatalf("principal %+v", p)
			}
		})
	}
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// An ES256 key published under the EdDSA kid must not verify ES256.
	wrongAlg := jose.JSONWebKey{Key: otherEC, KeyID: "ed", Algorithm: "ES256"}
	rejected := map[string]string{
		"Expired":      mint(t, k.es, claims(func(c *jwtClaims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute)) })),
		"NotBefore":    mint(t, k.es, claims(func(c *jwtClaims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Minute)) })),
		"NoExpiry":     mint(t, k.es, claims(func(c *jwtClaims) { c.Expiry = nil })),
		"Issuer":       mint(t, k.es, claims(func(c *jwtClaims) { c.Issuer = "http://other/" })),
		"Audience":     mint(t, k.es, claims(func(c *jwtClaims) { c.Audience = nil })),
		"Subject":      mint(t, k.es, claims(func(c *jwtClaims) { c.Subject = "" })),
		"UnknownKid":   mint(t, jose.JSONWebKey{Key: otherEC, KeyID: "nope", Algorithm: "ES256"}, claims(nil)),
		"KidAlgSwap":   mint(t, wrongAlg, claims(nil)),
		"HS256":        mint(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "es", Algorithm: "HS256"}, claims(nil)),
		"Garbage":      "a.b.c",
		"AlgNoneShape": base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"es"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+sub.String()+`"}`)) + ".",
	}
	for name, tok := range rejected {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
		})
	}

	t.Run("CachedUntilExpiry", func(t *testing.T) {
		tok := mint(t, k.es, claims(func(c *jwtClaims) { c.Expiry = jwt.NewNumericDate(now.Add(10 * time.Second)) }))
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		// Mark the cache entry: a hit returns it without verifying again.
		sum := sha256.Sum256([]byte(tok))
		v.cacheMu.Lock()
		ce := v.cache[sum]
		ce.p.Email = "cached@example.com"
		v.cache[sum] = ce
		v.cacheMu.Unlock()
		if p, err := v.Verify(ctx, tok); err != nil || p.Email != "cached@example.com" {
			t.Fatalf("cached token: %v, %+v (cache not used)", err, p)
		}
		v.now = func() time.Time { return now.Add(time.Minute) }
		if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("expired cached token: %v", err)
		}
		v.now = time.Now
	})

	// A key withdrawn from the JWKS (compromised or rotated out) stops
	// vouching for tokens it signed, cached ones included, once the set is
	// read again.
	t.Run("WithdrawnKeyEndsCachedTokens", func(t *testing.T) {
		k := newKeys(t)
		v, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: k.url, Issuer: "http://kratos.test", RefreshInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tok := mint(t, k.es, claims(nil))
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.ed.Public()}})
		if err := os.WriteFile(k.url[len("file://"):], b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := v.refresh(ctx); err != nil { // the periodic re-read
			t.Fatal(err)
		}
		if _, err := v.Verify(ctx, tok); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("token of a withdrawn key: %v, want ErrUnauthenticated", err)
		}
		if _, err := v.Verify(ctx, mint(t, k.ed, claims(nil))); err != nil {
			t.Fatalf("token of the remaining key: %v", err)
		}
	})

	t.Run("RotationFetchesUnknownKid", func(t *testing.T) {
		v2, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: k.url, Issuer: "http://kratos.test", RefreshInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		newKey := jose.JSONWebKey{Key: otherEC, KeyID: "rotated", Algorithm: "ES256", Use: "sig"}
		b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.es.Public(), newKey.Public()}})
		if err := os.WriteFile(k.url[len("file://"):], b, 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		if _, err := v2.Verify(ctx, mint(t, newKey, claims(nil))); err != nil {
			t.Fatalf("rotated key: %v", err)
		}
	})

	t.Run("Config", func(t *testing.T) {
		if _, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: "file:///does/not/exist", Issuer: "x"}); err == nil {
			t.Fatal("missing JWKS file accepted")
		}
		if _, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: k.url}); err == nil {
			t.Fatal("missing issuer accepted")
		}
		hs, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("secretsecretsecretsecretsecret12"), KeyID: "h", Algorithm: "HS256"}}})
		p := filepath.Join(t.TempDir(), "hs.json")
		os.WriteFile(p, hs, 0o600)
		if _, err := NewJWTVerifier(ctx, JWTOptions{JWKSURL: "file://" + p, Issuer: "x"}); err == nil {
			t.Fatal("a JWKS with only a symmetric key accepted")
		}
	})
}
