package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	ory "github.com/ory/kratos-client-go"

	"github.com/promanage/promanage/internal/testenv"
)

// revocationBound is how fast a session revoked in Kratos must stop working
// on every route: the default PROMANAGE_SESSION_CACHE_TTL (4 s) plus the 1 s
// in-process cache, plus slack for a busy test machine.
const revocationBound = 8 * time.Second

// untilRefused polls a route with a credential until it is refused (401)
// and returns how long that took; it fails the test past revocationBound.
func untilRefused(t *testing.T, c client, path string, since time.Time) time.Duration {
	t.Helper()
	for {
		r := c.do("GET", path, nil)
		switch {
		case r.Status == 401:
			return time.Since(since)
		case r.Status != 200:
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		case time.Since(since) > revocationBound:
			t.Fatalf("GET %s still answers 200 %v after the session was revoked", path, time.Since(since))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A session logged out in Kratos stops working within seconds on every
// route and on every replica (two API processes sharing Redis), not only
// on the routes that always ask Kratos.
func TestLoggedOutSessionStopsWithinSeconds(t *testing.T) {
	a, b := server(t), server(t)
	u := testenv.SignUp(t, "revoke")
	slug := testenv.Slug("revoke")
	ca, cb := client{t: t, base: a, token: u.Token}, client{t: t, base: b, token: u.Token}
	ca.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	tp := "/v1/tenants/" + slug + "/projects"
	for range 3 { // cached on both replicas and in Redis
		ca.want(200, "GET", "/v1/me", nil)
		cb.want(200, "GET", tp, nil)
	}
	revoked := time.Now()
	testenv.Logout(t, u.Token)
	da := untilRefused(t, ca, "/v1/me", revoked)
	db := untilRefused(t, cb, tp, revoked)
	t.Logf("refused after %v (replica A, /v1/me) and %v (replica B, tenant route)", da, db)
}

// Revoking every session of an identity with Kratos' admin API stops its
// session tokens and the JWTs minted from them within the same bound.
func TestAdminRevocationStopsTokensAndJWTs(t *testing.T) {
	base := server(t, "-jwks-url", "file://"+testenv.KratosSecret(t, "jwks.public.json"))
	u := testenv.SignUp(t, "revoke-admin")
	cfg := ory.NewConfiguration()
	cfg.Servers = ory.ServerConfigurations{{URL: testenv.KratosURL()}}
	sess, resp, err := ory.NewAPIClient(cfg).FrontendAPI.ToSession(context.Background()).XSessionToken(u.Token).TokenizeAs("promanage").Execute()
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil || sess.Tokenized == nil {
		t.Fatalf("tokenize: %v", err)
	}
	tok, jwtc := client{t: t, base: base, token: u.Token}, client{t: t, base: base, token: *sess.Tokenized}
	for range 3 {
		tok.want(200, "GET", "/v1/me", nil)
		jwtc.want(200, "GET", "/v1/me", nil)
	}
	req, _ := http.NewRequest(http.MethodDelete, testenv.KratosAdminURL()+"/admin/identities/"+u.ID.String()+"/sessions", nil)
	revoked := time.Now()
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke sessions: %d", r.StatusCode)
	}
	dt := untilRefused(t, tok, "/v1/me", revoked)
	dj := untilRefused(t, jwtc, "/v1/me", revoked)
	t.Logf("refused after %v (session token) and %v (JWT)", dt, dj)
}
