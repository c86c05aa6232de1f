// Package testenv gives integration tests the real services they run
// against: a PostgreSQL database with the public schema migrated, Redis, and
// a Kratos server (started by scripts/test.sh). Tests never imitate these
// services; when one is missing the test fails and says how to start it.
package testenv

import (
	"bytes"
	"context"
	"encoding/json"

	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/tenant"
)

// DatabaseURL is the test database (PROMANAGE_TEST_DATABASE_URL).
func DatabaseURL() string {
	if u := os.Getenv("PROMANAGE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/promanage_test?sslmode=disable"
}

// RedisURL is the test Redis (PROMANAGE_TEST_REDIS_URL).
func RedisURL() string {
	if u := os.Getenv("PROMANAGE_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/15"
}

// KratosURL is the public API of the test Kratos (PROMANAGE_TEST_KRATOS_URL).
func KratosURL() string {
	if u := os.Getenv("PROMANAGE_TEST_KRATOS_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:4533"
}

// KratosAdminURL is the admin API of the test Kratos
// (PROMANAGE_TEST_KRATOS_ADMIN_URL).
func KratosAdminURL() string {
	if u := os.Getenv("PROMANAGE_TEST_KRATOS_ADMIN_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:4534"
}

// KratosSecret returns the path of one of the test Kratos' generated
// secrets (jwks.public.json, jwks.es256.private.json, ...), which
// scripts/test.sh keeps in PROMANAGE_TEST_SECRETS_DIR.
func KratosSecret(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("PROMANAGE_TEST_SECRETS_DIR")
	if dir == "" {
		t.Fatal("PROMANAGE_TEST_SECRETS_DIR is not set: run the tests with `make test` (scripts/test.sh generates the test Kratos' keys)")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test Kratos secret %s: %v (run `make test`)", name, err)
	}
	return p
}

var (
	dbOnce sync.Once
	db     *gorm.DB
	dbErr  error
)

// DB returns a pool on the test database with the public schema migrated.
func DB(t testing.TB) *gorm.DB {
	t.Helper()
	dbOnce.Do(func() {
		ctx := context.Background()
		db, dbErr = tenant.OpenDB(ctx, DatabaseURL(), nil)
		if dbErr == nil {
			dbErr = tenant.MigratePublic(ctx, db)
		}
	})
	if dbErr != nil {
		t.Fatalf("test database %s: %v (run `make test`, which creates it)", DatabaseURL(), dbErr)
	}
	return db
}

// Slug returns a tenant slug no other test uses.
func Slug(prefix string) string {
	return prefix + "-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
}

// Email returns a unique e-mail address.
func Email(name string) string {
	return name + "-" + uuid.NewString()[:8] + "@example.com"
}

// User is a person registered with the test Kratos.
type User struct {
	ID    uuid.UUID
	Email string
	Token string
}

// SignUp registers a new identity through Kratos' API registration flow, as
// a client would, and returns its session token.
func SignUp(t testing.TB, name string) User {
	t.Helper()
	return SignUpAt(t, KratosURL(), name)
}

// SignUpAt is SignUp with the Kratos at base (a private one a test runs).
func SignUpAt(t testing.TB, base, name string) User {
	t.Helper()
	email := Email(name)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/self-service/registration/api")
	if err != nil {
		t.Fatalf("kratos at %s: %v (run `make test`, which starts it)", base, err)
	}
	var flow struct {
		ID string `json:"id"`
	}
	json.NewDecoder(resp.Body).Decode(&flow)
	resp.Body.Close()
	body, _ := json.Marshal(map[string]any{"method": "password", "password": "Test-passphrase-" + uuid.NewString()[:8],
		"traits": map[string]any{"email": email, "name": name}})
	resp, err = c.Post(base+"/self-service/registration?flow="+flow.ID, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		SessionToken string `json:"session_token"`
		Identity     struct {
			ID string `json:"id"`
		} `json:"identity"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.SessionToken == "" {
		t.Fatalf("kratos registration failed: status %d, %v", resp.StatusCode, err)
	}
	return User{ID: uuid.MustParse(out.Identity.ID), Email: email, Token: out.SessionToken}
}

// Logout revokes a session token through Kratos.
func Logout(t testing.TB, token string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"session_token": token})
	req, _ := http.NewRequest(http.MethodDelete, KratosURL()+"/self-service/logout/api", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: status %d", resp.StatusCode)
	}
}
