package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/uuid"
	ory "github.com/ory/kratos-client-go"

	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// A viewer given a custom role with projects:create can create a project and
// loses the power when the role changes; built-in roles are immutable, a role
// in use cannot be deleted, owner-only powers and powers the caller lacks
// cannot be granted, and every change and denial is in the audit log.
func TestCustomRoles(t *testing.T) {
	base := server(t)
	ownerU := testenv.SignUp(t, "owner")
	owner := client{t: t, base: base, token: ownerU.Token}
	carolU, smithU := testenv.SignUp(t, "carol"), testenv.SignUp(t, "smith")
	carol := client{t: t, base: base, token: carolU.Token}
	smith := client{t: t, base: base, token: smithU.Token}
	carol.want(200, "GET", "/v1/me", nil)
	smith.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("roles")
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	tp := "/v1/tenants/" + slug
	owner.want(201, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "viewer"})

	// Create, then replace (object form), a custom role.
	r := owner.want(201, "PUT", tp+"/roles/creator", map[string]any{"permissions": []string{"projects:read", "projects:create", "projects:read"}})
	if got := r.json(t)["permissions"].([]any); len(got) != 2 {
		t.Fatalf("created role: %s", r.Body)
	}
	owner.want(200, "PUT", tp+"/roles/creator", map[string]any{"permissions": []any{
		map[string]string{"object": "projects", "action": "read"}, map[string]string{"object": "projects", "action": "create"},
		"tenant:read"}})
	r = owner.want(200, "GET", tp+"/roles", nil)
	var found bool
	for _, it := range r.json(t)["items"].([]any) {
		role := it.(map[string]any)
		if role["name"] == "creator" {
			found = role["builtin"] == false && len(role["permissions"].([]any)) == 3
		}
	}
	if !found {
		t.Fatalf("roles list lacks the custom role: %s", r.Body)
	}

	for _, tc := range []struct {
		name, role string
		body       any
		want       int
	}{
		{"BuiltinImmutable", "admin", map[string]any{"permissions": []string{"projects:read"}}, 409},
		{"BadName", "Big-Boss", map[string]any{"permissions": []string{"projects:read"}}, 422},
		{"OwnerOnlyDelete", "crown", map[string]any{"permissions": []string{"tenant:delete"}}, 422},
		{"OwnerOnlyOwners", "crown", map[string]any{"permissions": []string{"members:manage_owners"}}, 422},
		{"UnknownPermission", "crown", map[string]any{"permissions": []string{"projects:destroy"}}, 422},
		{"Empty", "crown", map[string]any{"permissions": []string{}}, 422},
		{"Missing", "crown", map[string]any{}, 422},
		{"UnknownField", "crown", map[string]any{"permissions": []string{"projects:read"}, "superuser": true}, 422},
		{"NameMismatch", "crown", map[string]any{"permissions": []string{"projects:read"}, "name": "other"}, 422},
	} {
		t.Run(tc.name, func(t *testing.T) {
			owner.want(tc.want, "PUT", tp+"/roles/"+tc.role, tc.body)
		})
	}
	owner.want(409, "DELETE", tp+"/roles/owner", nil)
	owner.want(404, "DELETE", tp+"/roles/nosuchrole", nil)
	owner.want(422, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "nosuchrole"})

	// The acceptance scenario: the viewer gets the custom role, then loses it.
	carol.want(403, "POST", tp+"/projects", map[string]any{"key": "CAR1", "name": "c"})
	owner.want(200, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "creator"})
	carol.want(201, "POST", tp+"/projects", map[string]any{"key": "CAR2", "name": "by a custom role"})
	carol.want(403, "DELETE", tp, nil)
	owner.want(409, "DELETE", tp+"/roles/creator", nil) // in use
	owner.want(200, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "viewer"})
	carol.want(403, "POST", tp+"/projects", map[string]any{"key": "CAR3", "name": "c"})
	// Editing a role changes what its holders may do, at once.
	owner.want(200, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "creator"})
	carol.want(201, "POST", tp+"/projects", map[string]any{"key": "CAR4", "name": "c"})
	owner.want(200, "PUT", tp+"/roles/creator", map[string]any{"permissions": []string{"projects:read", "tenant:read"}})
	carol.want(403, "POST", tp+"/projects", map[string]any{"key": "CAR5", "name": "c"})
	owner.want(200, "PUT", tp+"/members/"+carolU.ID.String(), map[string]string{"role": "viewer"})
	owner.want(204, "DELETE", tp+"/roles/creator", nil)
	owner.want(404, "DELETE", tp+"/roles/creator", nil)

	// Denied: a viewer cannot manage roles.
	carol.want(403, "PUT", tp+"/roles/sneaky", map[string]any{"permissions": []string{"projects:read"}})

	// Ceiling: whoever holds roles:manage can only grant what they hold.
	owner.want(201, "PUT", tp+"/roles/rolesmith", map[string]any{"permissions": []string{"roles:manage", "roles:read", "projects:read"}})
	owner.want(201, "PUT", tp+"/members/"+smithU.ID.String(), map[string]string{"role": "rolesmith"})
	r = smith.want(403, "PUT", tp+"/roles/escalate", map[string]any{"permissions": []string{"projects:read", "projects:create"}})
	if !strings.Contains(string(r.Body), "projects:create") {
		t.Fatalf("403 does not name the permission: %s", r.Body)
	}
	smith.want(403, "PUT", tp+"/roles/rolesmith", map[string]any{"permissions": []string{"roles:manage", "roles:read", "audit:read"}})
	smith.want(201, "PUT", tp+"/roles/reader", map[string]any{"permissions": []string{"projects:read"}})

	// Audit: role and member changes, and denied attempts at admin actions.
	r = owner.want(200, "GET", tp+"/audit?object_type=role&object_id=creator", nil)
	var actions []string
	for _, e := range r.json(t)["items"].([]any) {
		actions = append(actions, e.(map[string]any)["action"].(string))
	}
	if strings.Join(actions, ",") != "role.delete,role.put,role.put,role.put" {
		t.Fatalf("audit of role creator: %v", actions)
	}
	r = owner.want(200, "GET", tp+"/audit?action=member.set_role&object_id="+carolU.ID.String(), nil)
	if n := len(r.json(t)["items"].([]any)); n != 5 {
		t.Fatalf("member.set_role entries for carol: %d: %s", n, r.Body)
	}
	r = owner.want(200, "GET", tp+"/audit?outcome=denied&actor="+carolU.ID.String(), nil)
	denied := map[string]bool{}
	for _, e := range r.json(t)["items"].([]any) {
		denied[e.(map[string]any)["action"].(string)] = true
	}
	for _, a := range []string{"roles:manage", "projects:create", "tenant:delete"} {
		if !denied[a] {
			t.Errorf("denied %s by the viewer is not audited: %s", a, r.Body)
		}
	}
	r = owner.want(200, "GET", tp+"/audit?outcome=denied&action=role.put&actor="+smithU.ID.String(), nil)
	if n := len(r.json(t)["items"].([]any)); n != 2 {
		t.Fatalf("denied escalations audited: %d: %s", n, r.Body)
	}
	r = owner.want(200, "GET", tp+"/audit?limit=2", nil)
	if cur, _ := r.json(t)["next_cursor"].(string); cur == "" {
		t.Fatalf("audit pagination: %s", r.Body)
	} else {
		owner.want(200, "GET", tp+"/audit?limit=2&cursor="+cur, nil)
	}
	carol.want(403, "GET", tp+"/audit", nil)
}

// Two `promanage serve` processes on one database and Redis: a grant on A is
// usable on B, and a revocation on A is enforced on B within one second
// (pub/sub invalidation; B's periodic reload alone would take 30 s).
func TestRevocationAcrossReplicas(t *testing.T) {
	baseA, baseB := server(t), server(t)
	ownerU, bobU := testenv.SignUp(t, "owner"), testenv.SignUp(t, "bob")
	ownerA := client{t: t, base: baseA, token: ownerU.Token}
	bobB := client{t: t, base: baseB, token: bobU.Token}
	slug := testenv.Slug("replica")
	tp := "/v1/tenants/" + slug
	ownerA.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	bobB.want(404, "GET", tp+"/projects", nil) // B caches the tenant's enforcer now

	n := 0
	create := func() int {
		n++
		return bobB.do("POST", tp+"/projects", map[string]any{"key": "B" + strconv.Itoa(n), "name": "from B"}).Status
	}
	within := func(what string, f func() bool) {
		t.Helper()
		start := time.Now()
		for !f() {
			if time.Since(start) > 3*time.Second {
				t.Fatalf("%s: not seen on replica B after %v", what, time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d := time.Since(start); d >= time.Second {
			t.Fatalf("%s: seen on replica B after %v, want < 1s", what, d)
		} else {
			t.Logf("%s: seen on replica B after %v", what, d)
		}
	}

	ownerA.want(201, "PUT", tp+"/members/"+bobU.ID.String(), map[string]string{"role": "manager"})
	within("grant", func() bool { return create() == 201 })
	ownerA.want(200, "PUT", tp+"/members/"+bobU.ID.String(), map[string]string{"role": "viewer"})
	within("role change", func() bool { return create() == 403 })
	ownerA.want(201, "PUT", tp+"/roles/maker", map[string]any{"permissions": []string{"projects:create"}})
	ownerA.want(200, "PUT", tp+"/members/"+bobU.ID.String(), map[string]string{"role": "maker"})
	within("custom role grant", func() bool { return create() == 201 })
	ownerA.want(200, "PUT", tp+"/roles/maker", map[string]any{"permissions": []string{"tenant:read"}})
	within("custom role edit", func() bool { return create() == 403 })
	ownerA.want(204, "DELETE", tp+"/members/"+bobU.ID.String(), nil)
	within("removal", func() bool { return bobB.do("GET", tp, nil).Status == 404 })
}

// JWTs from the real test Kratos' tokenizer are accepted; forged, expired,
// alg=none, HS256, unknown-kid, wrong-issuer and wrong-audience ones are not.
func TestJWTFromKratosTokenizer(t *testing.T) {
	jwks := testenv.KratosSecret(t, "jwks.public.json")
	base := server(t, "-jwks-url", "file://"+jwks)
	u := testenv.SignUp(t, "jwt")
	tokenize := func(template string) string {
		t.Helper()
		cfg := ory.NewConfiguration()
		cfg.Servers = ory.ServerConfigurations{{URL: testenv.KratosURL()}}
		sess, resp, err := ory.NewAPIClient(cfg).FrontendAPI.ToSession(context.Background()).
			XSessionToken(u.Token).TokenizeAs(template).Execute()
		if resp != nil {
			resp.Body.Close()
		}
		if err != nil || sess.Tokenized == nil {
			t.Fatalf("kratos tokenize_as=%s: %v (is the tokenizer template in deploy/kratos/kratos.yml?)", template, err)
		}
		return *sess.Tokenized
	}
	es := tokenize("promanage")
	ed := tokenize("promanage_eddsa")

	for name, tok := range map[string]string{"ES256": es, "EdDSA": ed} {
		t.Run(name, func(t *testing.T) {
			c := client{t: t, base: base, token: tok}
			r := c.want(200, "GET", "/v1/me", nil)
			if got := r.json(t)["user"].(map[string]any); got["id"] != u.ID.String() || got["email"] != u.Email {
				t.Fatalf("me: %s", r.Body)
			}
		})
	}
	jc := client{t: t, base: base, token: es}
	slug := testenv.Slug("jwt")
	jc.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	jc.want(200, "GET", "/v1/tenants/"+slug+"/projects", nil)

	// Tokens signed here with the test Kratos' private key (generated by
	// scripts/test.sh): valid ones pass, so the refusals below are about the
	// claim or header under test.
	devKey := readJWK(t, testenv.KratosSecret(t, "jwks.es256.private.json"))
	sid := sessionID(t, u.Token) // the API checks that a JWT's session is still active
	now := time.Now()
	good := jwt.Claims{Issuer: testenv.KratosURL() + "/", Subject: u.ID.String(), Audience: jwt.Audience{"promanage"},
		Expiry: jwt.NewNumericDate(now.Add(time.Minute)), NotBefore: jwt.NewNumericDate(now), IssuedAt: jwt.NewNumericDate(now)}
	with := func(f func(c *jwt.Claims)) jwt.Claims { c := good; f(&c); return c }
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	okTok := sign(t, devKey, good, sid)
	(client{t: t, base: base, token: okTok}).want(200, "GET", "/v1/me", nil)

	parts := strings.Split(es, ".")
	var payload map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(b, &payload)
	payload["sub"] = uuid.NewString()
	forgedPayload, _ := json.Marshal(payload)
	hdrNone := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + devKey.KeyID + `","typ":"JWT"}`))
	pub, _ := os.ReadFile(jwks)

	cases := map[string]string{
		"TamperedPayload": parts[0] + "." + base64.RawURLEncoding.EncodeToString(forgedPayload) + "." + parts[2],
		"AlgNone":         hdrNone + "." + parts[1] + ".",
		"AlgNoneWithSig":  hdrNone + "." + parts[1] + "." + parts[2],
		"HS256PublicKey":  signHS(t, pub, devKey.KeyID, good),
		"OtherKeySameKid": sign(t, jose.JSONWebKey{Key: otherKey, KeyID: devKey.KeyID, Algorithm: "ES256"}, good, sid),
		"UnknownKid":      sign(t, jose.JSONWebKey{Key: otherKey, KeyID: "attacker", Algorithm: "ES256"}, good, sid),
		"Expired":         sign(t, devKey, with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute)) }), sid),
		"NotYetValid":     sign(t, devKey, with(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }), sid),
		"NoExpiry":        sign(t, devKey, with(func(c *jwt.Claims) { c.Expiry = nil }), sid),
		"WrongIssuer":     sign(t, devKey, with(func(c *jwt.Claims) { c.Issuer = "https://evil.example/" }), sid),
		"WrongAudience":   sign(t, devKey, with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"someone-else"} }), sid),
		"SubjectNotUUID":  sign(t, devKey, with(func(c *jwt.Claims) { c.Subject = "admin" }), sid),
		// The signature is fine but the session is not this user's, not
		// known to Kratos, or not named at all.
		"ForeignSession": sign(t, devKey, good, sessionID(t, testenv.SignUp(t, "jwt-other").Token)),
		"UnknownSession": sign(t, devKey, good, uuid.NewString()),
		"NoSession":      sign(t, devKey, good, ""),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			r := (client{t: t, base: base, token: tok}).want(401, "GET", "/v1/me", nil)
			if r.json(t)["code"] != "unauthorized" {
				t.Fatalf("body %s", r.Body)
			}
		})
	}
	t.Run("NoJWKSConfigured", func(t *testing.T) {
		plain := server(t)
		(client{t: t, base: plain, token: es}).want(401, "GET", "/v1/me", nil)
		(client{t: t, base: plain, token: u.Token}).want(200, "GET", "/v1/me", nil)
	})
}

func readJWK(t *testing.T, path string) jose.JSONWebKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	return set.Keys[0]
}

// sign makes a JWT as Kratos' tokenizer would, for the session sid.
func sign(t *testing.T, k jose.JSONWebKey, c jwt.Claims, sid string) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.Algorithm), Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Claims(map[string]any{"sid": sid}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sessionID is the Kratos session id of a session token.
func sessionID(t *testing.T, token string) string {
	t.Helper()
	cfg := ory.NewConfiguration()
	cfg.Servers = ory.ServerConfigurations{{URL: testenv.KratosURL()}}
	sess, resp, err := ory.NewAPIClient(cfg).FrontendAPI.ToSession(context.Background()).XSessionToken(token).Execute()
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("kratos toSession: %v", err)
	}
	return sess.Id
}

// signHS makes the classic confusion attack: HMAC "signed" with the public
// key's bytes as the secret, naming the ES256 key's kid.
func signHS(t *testing.T, secret []byte, kid string, c jwt.Claims) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testHookKey is the hook key scripts/test.sh generated for the test
// Kratos' registration web hook.
func testHookKey(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(testenv.KratosSecret(t, "hook-api-key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestRegistrationHook(t *testing.T) {
	devHookKey := testHookKey(t)
	base := server(t, "-hook-api-key", devHookKey)
	db := testenv.DB(t)
	hook := "/v1/hooks/kratos/registration"
	id := uuid.New()
	t1 := time.Now().UTC().Truncate(time.Millisecond)
	body := func(name string, at time.Time) map[string]any {
		return map[string]any{"identity_id": id, "updated_at": at.Format(time.RFC3339Nano),
			"traits": map[string]any{"email": "hook-" + id.String()[:8] + "@example.com", "name": name}}
	}
	anon := client{t: t, base: base}
	anon.want(401, "POST", hook, body("x", t1))
	anon.want(401, "POST", hook, body("x", t1), "X-Hook-Key", "wrong")
	// A session token is not a hook key.
	u := testenv.SignUp(t, "hooker")
	(client{t: t, base: base, token: u.Token}).want(401, "POST", hook, body("x", t1))

	applied := func(r response) bool { return r.json(t)["applied"] == true }
	nameOf := func() string {
		var n string
		db.Raw("SELECT name FROM public.users WHERE id = ?", id).Scan(&n)
		return n
	}
	if !applied(anon.want(200, "POST", hook, body("First", t1), "X-Hook-Key", devHookKey)) || nameOf() != "First" {
		t.Fatal("first delivery not applied")
	}
	if applied(anon.want(200, "POST", hook, body("First", t1), "X-Hook-Key", devHookKey)) {
		t.Fatal("replay applied")
	}
	t2 := t1.Add(time.Second)
	anon.want(200, "POST", hook, body("Second", t2), "X-Hook-Key", devHookKey)
	if applied(anon.want(200, "POST", hook, body("Stale", t1), "X-Hook-Key", devHookKey)) || nameOf() != "Second" {
		t.Fatalf("an older delivery overwrote a newer one: %q", nameOf())
	}
	anon.want(422, "POST", hook, map[string]any{"identity_id": "nope", "updated_at": "yesterday"}, "X-Hook-Key", devHookKey)
	anon.want(422, "POST", hook, map[string]any{"identity_id": id, "updated_at": t2, "is_admin": true}, "X-Hook-Key", devHookKey)
	anon.want(415, "POST", hook, "x", "X-Hook-Key", devHookKey, "Content-Type", "text/plain")

	t.Run("DisabledWithoutKey", func(t *testing.T) {
		plain := server(t)
		(client{t: t, base: plain}).want(404, "POST", hook, body("x", t1), "X-Hook-Key", devHookKey)
	})
}

// The test Kratos really calls the hook: the overlay scripts/test.sh
// generated sends it to 127.0.0.1:8080 (the `make run` API address) with the
// generated key, so this test serves there.
func TestRegistrationHookFromKratos(t *testing.T) {
	const addr = "127.0.0.1:8080"
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s is in use (is `make run` running?): this test serves the hook target of deploy/kratos/kratos.yml there: %v", addr, err)
	}
	ln.Close()
	server(t, "-http-addr", addr, "-hook-api-key", testHookKey(t))
	db := testenv.DB(t)
	u := testenv.SignUp(t, "kratos-hook") // never calls ProManage itself
	deadline := time.Now().Add(10 * time.Second)
	for {
		var row struct {
			Email             string
			IdentityUpdatedAt *time.Time
		}
		db.Raw("SELECT email, identity_updated_at FROM public.users WHERE id = ?", u.ID).Scan(&row)
		if row.Email == u.Email && row.IdentityUpdatedAt != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Kratos' registration web hook did not record user %s within 10s (row %+v)", u.ID, row)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRateLimits(t *testing.T) {
	t.Run("PerIdentity", func(t *testing.T) {
		base := server(t, "-rate-limit-user", "5", "-rate-limit-window", "1m")
		c := client{t: t, base: base, token: testenv.SignUp(t, "burst").Token}
		for i := range 5 {
			r := c.want(200, "GET", "/v1/me", nil)
			if r.Header.Get("RateLimit-Limit") != "5" || r.Header.Get("RateLimit-Remaining") != strconv.Itoa(4-i) {
				t.Fatalf("request %d headers: %v", i, r.Header)
			}
			if reset, _ := strconv.Atoi(r.Header.Get("RateLimit-Reset")); reset < 1 || reset > 60 {
				t.Fatalf("RateLimit-Reset %q", r.Header.Get("RateLimit-Reset"))
			}
		}
		r := c.want(429, "GET", "/v1/me", nil)
		if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 || ra > 60 {
			t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
		}
		if r.json(t)["code"] != "rate_limited" || r.Header.Get("RateLimit-Remaining") != "0" {
			t.Fatalf("429: %v %s", r.Header, r.Body)
		}
		// Another identity has its own budget.
		(client{t: t, base: base, token: testenv.SignUp(t, "calm").Token}).want(200, "GET", "/v1/me", nil)
	})
	t.Run("PerTenant", func(t *testing.T) {
		base := server(t, "-rate-limit-user", "0", "-rate-limit-tenant", "3")
		a := client{t: t, base: base, token: testenv.SignUp(t, "ta").Token}
		bU := testenv.SignUp(t, "tb")
		b := client{t: t, base: base, token: bU.Token}
		b.want(200, "GET", "/v1/me", nil)
		slug := testenv.Slug("limit")
		a.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
		a.want(201, "PUT", "/v1/tenants/"+slug+"/members/"+bU.ID.String(), map[string]string{"role": "viewer"})
		r := b.want(200, "GET", "/v1/tenants/"+slug, nil)
		if r.Header.Get("RateLimit-Limit") != "3" || r.Header.Get("RateLimit-Remaining") != "1" {
			t.Fatalf("tenant headers: %v", r.Header)
		}
		a.want(200, "GET", "/v1/me", nil) // outside the tenant: not counted
		a.want(200, "GET", "/v1/tenants/"+slug, nil)
		b.want(429, "GET", "/v1/tenants/"+slug, nil) // the tenant's budget is shared
		// Outsiders cannot spend a tenant's budget: they never get that far.
		other := testenv.Slug("limit")
		a.want(201, "POST", "/v1/tenants", map[string]string{"slug": other})
		a.want(200, "GET", "/v1/tenants/"+other, nil)
	})
	t.Run("InProcessWithoutRedis", func(t *testing.T) {
		base := server(t, "-redis-url", "", "-rate-limit-user", "2")
		c := client{t: t, base: base, token: testenv.SignUp(t, "mem").Token}
		c.want(200, "GET", "/v1/me", nil)
		c.want(200, "GET", "/v1/me", nil)
		c.want(429, "GET", "/v1/me", nil)
	})
	t.Run("RedisDownFailsOpen", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // a port nobody serves
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		base := server(t, "-redis-url", "redis://"+dead+"/0", "-rate-limit-user", "2")
		c := client{t: t, base: base, token: testenv.SignUp(t, "nolimit").Token}
		start := time.Now()
		for range 6 {
			r := c.want(200, "GET", "/v1/me", nil)
			if r.Header.Get("RateLimit-Limit") != "" {
				t.Fatalf("limit headers without a limiter: %v", r.Header)
			}
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("6 requests with Redis down took %v", d)
		}
		// Authentication stays fail-closed: no credential, no access.
		(client{t: t, base: base}).want(401, "GET", "/v1/me", nil)
		// Redis is shared by every replica: its outage is reported, not
		// a reason to take this process out of the load balancer.
		r := (client{t: t, base: base}).want(200, "GET", "/readyz", nil)
		if r.json(t)["checks"].(map[string]any)["redis"] != "unavailable" {
			t.Fatalf("readyz: %s", r.Body)
		}
	})
}

// runCLI runs one promanage command against the test services.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out strings.Builder
	m := NewMain(&out, io.Discard)
	args = append(args, "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(), "-log-level", "error")
	if err := m.Run(context.Background(), args); err != nil {
		t.Fatalf("promanage %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

func TestTenantLifecycle(t *testing.T) {
	base := server(t)
	ownerU, adminU := testenv.SignUp(t, "owner"), testenv.SignUp(t, "admin")
	owner := client{t: t, base: base, token: ownerU.Token}
	admin := client{t: t, base: base, token: adminU.Token}
	admin.want(200, "GET", "/v1/me", nil)
	slug := testenv.Slug("life")
	tp := "/v1/tenants/" + slug
	owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug, "name": "Life"})
	owner.want(201, "PUT", tp+"/members/"+adminU.ID.String(), map[string]string{"role": "admin"})

	t.Run("Rename", func(t *testing.T) {
		r := admin.want(200, "PATCH", tp, map[string]string{"name": "Life & Co"})
		if r.json(t)["name"] != "Life & Co" {
			t.Fatalf("rename: %s", r.Body)
		}
		admin.want(422, "PATCH", tp, map[string]string{"name": ""})
		admin.want(422, "PATCH", tp, map[string]string{"slug": "renamed"})
	})
	t.Run("SuspendResume", func(t *testing.T) {
		// The CLI is another process: the server learns of the change through
		// the Redis invalidation, asynchronously (within a second).
		runCLI(t, "tenant", "suspend", "-slug", slug)
		r := eventuallyStatus(t, admin, 403, "GET", tp+"/members")
		if r.json(t)["code"] != "tenant_suspended" {
			t.Fatalf("suspended: %s", r.Body)
		}
		owner.want(403, "POST", tp+"/projects", map[string]any{"key": "SUS", "name": "n"})
		runCLI(t, "tenant", "resume", "-slug", slug)
		eventuallyStatus(t, admin, 200, "GET", tp+"/members")
	})
	t.Run("DeleteOwnerOnly", func(t *testing.T) {
		admin.want(403, "DELETE", tp, nil)
		r := owner.want(200, "GET", tp+"/audit?outcome=denied&action=tenant:delete", nil)
		if len(r.json(t)["items"].([]any)) != 1 {
			t.Fatalf("denied delete not audited: %s", r.Body)
		}
		owner.want(204, "DELETE", tp, nil)
		owner.want(404, "GET", tp, nil)
		admin.want(404, "GET", tp+"/projects", nil)
		owner.want(404, "DELETE", tp, nil)
		if ms := owner.want(200, "GET", "/v1/me", nil).json(t)["memberships"].([]any); len(ms) != 0 {
			t.Fatalf("deleted tenant still listed: %v", ms)
		}
		owner.want(409, "POST", "/v1/tenants", map[string]string{"slug": slug}) // reserved until purge
		admin.want(409, "POST", "/v1/tenants", map[string]string{"slug": slug})
	})
	t.Run("PurgeAfterGrace", func(t *testing.T) {
		db := testenv.DB(t)
		reg := tenant.NewRegistry(db, nil)
		tn, err := reg.BySlug(context.Background(), slug)
		if err != nil || tn.State != tenant.StateDeleted {
			t.Fatalf("deleted tenant: %+v %v", tn, err)
		}
		// The app the worker runs, with a file bucket holding one of the
		// tenant's blobs.
		blobs := t.TempDir()
		cfg, err := defaultConfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg.DatabaseURL, cfg.RedisURL, cfg.BlobURL, cfg.DBMaxConns = testenv.DatabaseURL(), testenv.RedisURL(), "file://"+blobs, 4
		a, err := openApp(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		key := storage.TenantPrefix(tn.ID) + "documents/" + uuid.NewString() + "/v1"
		b, err := storage.OpenBucket(context.Background(), cfg.blobURL())
		if err != nil {
			t.Fatal(err)
		}
		if err := b.WriteAll(context.Background(), key, []byte("doc"), nil); err != nil {
			t.Fatal(err)
		}
		defer b.Close()

		// Not due yet: nothing happens.
		if _, err := a.purgeDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.ByID(context.Background(), tn.ID); err != nil {
			t.Fatalf("purged before the grace period ended: %v", err)
		}
		db.Exec("UPDATE public.tenants SET purge_after = now() - interval '1 second' WHERE id = ?", tn.ID)
		if n, err := a.purgeDue(context.Background()); err != nil || n < 1 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if _, err := reg.ByID(context.Background(), tn.ID); err != tenant.ErrNotFound {
			t.Fatalf("registry row after purge: %v", err)
		}
		var schemas int64
		db.Raw("SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", tn.SchemaName).Scan(&schemas)
		if schemas != 0 {
			t.Fatalf("schema %s still exists", tn.SchemaName)
		}
		var rules int64
		db.Raw("SELECT count(*) FROM public.casbin_rule WHERE v1 = ? OR v2 = ?", tn.ID.String(), tn.ID.String()).Scan(&rules)
		if rules != 0 {
			t.Fatalf("%d policy rows left", rules)
		}
		if ok, _ := b.Exists(context.Background(), key); ok {
			t.Fatal("the tenant's blob survived the purge")
		}
		// The slug is free again.
		owner.want(201, "POST", "/v1/tenants", map[string]string{"slug": slug})
	})
}

// eventuallyStatus repeats a request until it answers status, for at most
// one second (the documented cross-process propagation bound).
func eventuallyStatus(t *testing.T, c client, status int, method, path string) response {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		r := c.do(method, path, nil)
		if r.Status == status || time.Now().After(deadline) {
			if r.Status != status {
				t.Fatalf("%s %s: still %d after 1s, want %d: %s", method, path, r.Status, status, r.Body)
			}
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
}
