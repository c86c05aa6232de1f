package plugins

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func newTestBox(t *testing.T, key string) *SecretBox {
	t.Helper()
	b, err := NewSecretBox([]byte(key))
	if err != nil || b == nil {
		t.Fatalf("NewSecretBox: %v, %v", b, err)
	}
	return b
}

func TestSecretBox(t *testing.T) {
	box := newTestBox(t, "test-secret-key-0123456789-0123456789")
	id, other := uuid.New(), uuid.New()
	secret, err := newSigningSecret()
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := box.Seal(id, secret)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("SealedIsNotTheSecret", func(t *testing.T) {
		if !strings.HasPrefix(sealed, "v1:") || strings.Contains(sealed, secret) || strings.Contains(sealed, strings.TrimPrefix(secret, "whsec_")) {
			t.Fatalf("sealed value %q reveals or misformats the secret", sealed)
		}
		again, _ := box.Seal(id, secret)
		if again == sealed {
			t.Fatal("two seals of one secret are equal: the nonce is not random")
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		got, err := box.Open(id, sealed)
		if err != nil || got != secret {
			t.Fatalf("Open = %q, %v; want %q", got, err, secret)
		}
	})
	t.Run("OtherPluginsRowDoesNotOpen", func(t *testing.T) {
		if got, err := box.Open(other, sealed); !errors.Is(err, ErrSecretUnreadable) || got != "" {
			t.Fatalf("Open with another plugin id = %q, %v; want ErrSecretUnreadable", got, err)
		}
	})
	t.Run("OtherKeyDoesNotOpen", func(t *testing.T) {
		rotated := newTestBox(t, "another-secret-key-0123456789-0123456789")
		if _, err := rotated.Open(id, sealed); !errors.Is(err, ErrSecretUnreadable) {
			t.Fatalf("Open with another key: %v; want ErrSecretUnreadable", err)
		}
	})
	t.Run("Tampered", func(t *testing.T) {
		enc := []byte(sealed)
		i := len(enc) - 5
		if enc[i] == 'A' {
			enc[i] = 'B'
		} else {
			enc[i] = 'A'
		}
		for _, v := range []string{string(enc), "v1:", "v1:!!!", "v1:AAAA", "v2:" + sealed[3:], "plain"} {
			if _, err := box.Open(id, v); !errors.Is(err, ErrSecretUnreadable) {
				t.Errorf("Open(%q): %v; want ErrSecretUnreadable", v, err)
			}
		}
	})
	t.Run("LegacyClearTextOpensAsItIs", func(t *testing.T) {
		for _, b := range []*SecretBox{box, nil} {
			if got, err := b.Open(id, "whsec_legacy"); err != nil || got != "whsec_legacy" {
				t.Fatalf("Open(legacy) = %q, %v", got, err)
			}
		}
	})
	t.Run("NoKey", func(t *testing.T) {
		none, err := NewSecretBox(nil)
		if none != nil || err != nil {
			t.Fatalf("NewSecretBox(nil) = %v, %v; want no box", none, err)
		}
		if _, err := none.Seal(id, secret); !errors.Is(err, ErrNoSecretKey) {
			t.Fatalf("Seal without key: %v", err)
		}
		if _, err := none.Open(id, sealed); !errors.Is(err, ErrNoSecretKey) {
			t.Fatalf("Open without key: %v", err)
		}
	})
	t.Run("KeyIsDerived", func(t *testing.T) {
		// The same server key always derives the same sealing key, so a
		// restarted server (or the worker) opens what another sealed.
		if got, err := newTestBox(t, "test-secret-key-0123456789-0123456789").Open(id, sealed); err != nil || got != secret {
			t.Fatalf("a new box with the same key: %q, %v", got, err)
		}
	})
}
