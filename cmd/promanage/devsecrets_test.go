package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/promanage/promanage/internal/testenv"
)

// `promanage dev` generates its secrets once, owner-only, marked as
// development secrets, and keeps them across restarts; the Kratos overlay
// points at the generated keys and carries the hook key the API gets.
func TestDevSecretsGeneratedOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	o := devSecretsOptions{HookURL: "http://127.0.0.1:8080/v1/hooks/kratos/registration", KratosDir: "../../deploy/kratos"}
	first, err := ensureDevSecrets(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ensureDevSecrets(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if *first != *again {
		t.Fatalf("secrets changed on the second run: %+v vs %+v", first, again)
	}
	other, err := ensureDevSecrets(filepath.Join(t.TempDir(), "secrets"), o)
	if err != nil {
		t.Fatal(err)
	}
	if other.SecretKey == first.SecretKey || other.HookAPIKey == first.HookAPIKey {
		t.Fatal("two checkouts got the same secrets")
	}
	if !strings.HasPrefix(first.SecretKey, devSecretPrefix) || len(first.SecretKey) < 64 || !strings.HasPrefix(first.HookAPIKey, devSecretPrefix) {
		t.Fatalf("secrets not marked or too short: %q %q", first.SecretKey, first.HookAPIKey)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("secrets directory mode: %v %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	var overlay struct {
		Secrets struct{ Cookie, Cipher []string }
		Session struct {
			Whoami struct {
				Tokenizer struct {
					Templates map[string]struct {
						JWKSURL         string `json:"jwks_url"`
						ClaimsMapperURL string `json:"claims_mapper_url"`
					}
				}
			}
		}
	}
	b, err := os.ReadFile(first.KratosConfig)
	if err != nil || json.Unmarshal(b, &overlay) != nil {
		t.Fatalf("overlay %s: %v", first.KratosConfig, err)
	}
	if len(overlay.Secrets.Cookie) != 1 || len(overlay.Secrets.Cipher) != 1 || len(overlay.Secrets.Cipher[0]) != 32 {
		t.Fatalf("kratos secrets: %+v", overlay.Secrets)
	}
	if !strings.Contains(string(b), first.HookAPIKey) {
		t.Fatal("the Kratos overlay does not carry the API's hook key")
	}
	for _, name := range []string{"promanage", "promanage_eddsa"} {
		tpl := overlay.Session.Whoami.Tokenizer.Templates[name]
		for _, u := range []string{tpl.JWKSURL, tpl.ClaimsMapperURL} {
			if _, err := os.Stat(strings.TrimPrefix(u, "file://")); err != nil {
				t.Errorf("template %s: %s: %v", name, u, err)
			}
		}
	}
	keys := readJWKS(t, first.PublicJWKS)
	if len(keys) != 2 {
		t.Fatalf("public JWKS has %d keys", len(keys))
	}
	for _, k := range keys {
		if !k.IsPublic() || !strings.HasPrefix(k.KeyID, devKeyIDPrefix) {
			t.Errorf("public JWKS key %q: public=%v", k.KeyID, k.IsPublic())
		}
	}
}

// The once-committed dev JWKS key (public half: harmless to keep here).
const committedPublicJWKS = `{"keys":[{"use":"sig","kty":"EC","kid":"renamed","crv":"P-256","alg":"ES256",
"x":"900PA3_yFto4AWc3K9r2fqzzg4ciuArgNnkgSbz887o","y":"JgCuTM3tIoy_ZEKWql1LDzPnu_Lcm3sl7rCOZCsfjDc"}]}`

// serve and worker refuse every development secret: the values once
// committed to the repository and those `promanage dev` generates.
func TestProductionRefusesDevSecrets(t *testing.T) {
	dev, err := ensureDevSecrets(filepath.Join(t.TempDir(), "secrets"), devSecretsOptions{HookURL: "http://127.0.0.1:8080/x", KratosDir: "../../deploy/kratos"})
	if err != nil {
		t.Fatal(err)
	}
	committedJWKS := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(committedJWKS, []byte(committedPublicJWKS), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, cmd, setting string
		args               []string
	}{
		{"CommittedSecretKey", "serve", "PROMANAGE_SECRET_KEY", []string{"-secret-key", "dev-only-secret-key-do-not-use-in-production"}},
		{"GeneratedSecretKey", "serve", "PROMANAGE_SECRET_KEY", []string{"-secret-key", dev.SecretKey}},
		{"CommittedHookKey", "serve", "PROMANAGE_HOOK_API_KEY", []string{"-hook-api-key", "dev-only-hook-key-not-for-production"}},
		{"GeneratedHookKey", "serve", "PROMANAGE_HOOK_API_KEY", []string{"-hook-api-key", dev.HookAPIKey}},
		{"GeneratedJWKS", "serve", "PROMANAGE_JWKS_URL", []string{"-jwks-url", "file://" + dev.PublicJWKS}},
		{"CommittedJWKSKey", "serve", "PROMANAGE_JWKS_URL", []string{"-jwks-url", "file://" + committedJWKS}},
		{"WorkerCommittedSecretKey", "worker", "PROMANAGE_SECRET_KEY", []string{"-secret-key", "dev-only-secret-key-do-not-use-in-production"}},
		{"WorkerGeneratedSecretKey", "worker", "PROMANAGE_SECRET_KEY", []string{"-secret-key", dev.SecretKey}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			args := append([]string{tc.cmd, "-database-url", testenv.DatabaseURL(), "-redis-url", testenv.RedisURL(),
				"-http-addr", "127.0.0.1:0", "-data-dir", t.TempDir(), "-log-level", "error"}, tc.args...)
			err := NewMain(io.Discard, io.Discard).Run(ctx, args)
			if err == nil || !strings.Contains(err.Error(), tc.setting) || !strings.Contains(err.Error(), "development") {
				t.Fatalf("%s started with a development secret: %v", tc.cmd, err)
			}
		})
	}
}

// dev listens on loopback only and never trusts a once-committed secret.
func TestDevRefusesNonLoopbackAndCommittedSecrets(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "192.0.2.10:8080", "example.com:8080"} {
		t.Run(addr, func(t *testing.T) {
			err := NewMain(io.Discard, io.Discard).Run(context.Background(), []string{"dev", "-http-addr", addr, "-data-dir", t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), "loopback") {
				t.Fatalf("dev on %s: %v", addr, err)
			}
		})
	}
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.0.0.2:0"} {
		if err := checkLoopback(addr); err != nil {
			t.Errorf("%s refused: %v", addr, err)
		}
	}
	err := NewMain(io.Discard, io.Discard).Run(context.Background(), []string{"dev", "-data-dir", t.TempDir(),
		"-secret-key", "dev-only-secret-key-do-not-use-in-production"})
	if err == nil || !strings.Contains(err.Error(), "PROMANAGE_SECRET_KEY") {
		t.Fatalf("dev with a committed secret key: %v", err)
	}
}

func readJWKS(t *testing.T, path string) []jose.JSONWebKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return set.Keys
}
