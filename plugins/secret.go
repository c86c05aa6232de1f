package plugins

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/uuid"
)

// Webhook signing secrets at rest.
//
// public.plugins.signing_secret holds "v1:<base64(nonce|ciphertext)>": the
// secret sealed with AES-256-GCM under a key derived (HKDF-SHA256, label
// secretKeyLabel) from PROMANAGE_SECRET_KEY, with the plugin id as
// additional authenticated data, so a value copied onto another plugin's row
// does not open. Rows written before encryption hold the secret in clear
// ("whsec_..."): they keep signing and are re-encrypted on first use (the
// SQL migration has no key, so the upgrade happens in Go).
//
// There is one key. Changing PROMANAGE_SECRET_KEY makes every sealed secret
// unreadable: deliveries of those plugins fail (retried, then parked) until
// the old key is restored or the plugin is deleted and uploaded again (a new
// plugin gets a new secret). A key list for rotation is future work; the
// "v1:" prefix leaves room for it.

const (
	// secretKeyLabel is the HKDF info string: it separates this key from
	// every other use of PROMANAGE_SECRET_KEY (such as signing URLs).
	secretKeyLabel = "promanage plugin webhook secret v1"
	// sealedPrefix marks a sealed secret.
	sealedPrefix = "v1:"
	// legacyPrefix marks a secret stored in clear before encryption.
	legacyPrefix = "whsec_"
)

var (
	// ErrNoSecretKey means a secret must be sealed or opened but the server
	// has no PROMANAGE_SECRET_KEY.
	ErrNoSecretKey = errors.New("no PROMANAGE_SECRET_KEY is configured")
	// ErrSecretUnreadable means a stored secret cannot be opened: the key
	// changed, or the value was altered or belongs to another plugin.
	ErrSecretUnreadable = errors.New("the stored signing secret cannot be decrypted")
)

// SecretBox seals and opens plugins' webhook signing secrets. A nil
// *SecretBox has no key: it opens only legacy clear-text secrets.
type SecretBox struct {
	aead cipher.AEAD
}

// NewSecretBox derives the sealing key from the server's secret key. It
// returns nil (no box) for an empty key.
func NewSecretBox(secretKey []byte) (*SecretBox, error) {
	if len(secretKey) == 0 {
		return nil, nil
	}
	key, err := hkdf.Key(sha256.New, secretKey, nil, secretKeyLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("derive plugin secret key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("plugin secret cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("plugin secret cipher: %w", err)
	}
	return &SecretBox{aead: aead}, nil
}

// Seal encrypts a plugin's signing secret for storage in its row.
func (b *SecretBox) Seal(pluginID uuid.UUID, secret string) (string, error) {
	if b == nil {
		return "", ErrNoSecretKey
	}
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(secret)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal signing secret: %w", err)
	}
	out := b.aead.Seal(nonce, nonce, []byte(secret), pluginID[:])
	return sealedPrefix + base64.RawStdEncoding.EncodeToString(out), nil
}

// Open returns the signing secret stored in a plugin's row: a sealed value
// is decrypted (ErrNoSecretKey without a key, ErrSecretUnreadable if it does
// not authenticate for this plugin), a legacy clear-text value is returned
// as it is.
func (b *SecretBox) Open(pluginID uuid.UUID, stored string) (string, error) {
	if IsLegacySecret(stored) {
		return stored, nil
	}
	enc, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return "", fmt.Errorf("%w: unknown format", ErrSecretUnreadable)
	}
	if b == nil {
		return "", ErrNoSecretKey
	}
	raw, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil || len(raw) < b.aead.NonceSize()+b.aead.Overhead() {
		return "", fmt.Errorf("%w: malformed value", ErrSecretUnreadable)
	}
	n := b.aead.NonceSize()
	plain, err := b.aead.Open(nil, raw[:n], raw[n:], pluginID[:])
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSecretUnreadable, err)
	}
	return string(plain), nil
}

// IsLegacySecret reports whether a stored value is a secret written in clear
// before encryption at rest.
func IsLegacySecret(stored string) bool { return strings.HasPrefix(stored, legacyPrefix) }

// upgradeSecret re-encrypts a plugin's legacy clear-text secret in its row
// and returns what the row holds afterwards. It only replaces the value it
// read (a concurrent upgrade wins harmlessly: both seal the same secret),
// leaves the revision (ETag) alone, and is best effort: without a key, or if
// the write fails, the clear value keeps signing and the next use retries.
func (r *Registry) upgradeSecret(ctx context.Context, pluginID uuid.UUID, clear string) string {
	if r.secrets == nil {
		return clear
	}
	sealed, err := r.secrets.Seal(pluginID, clear)
	if err == nil {
		err = r.db.WithContext(ctx).Exec("UPDATE public.plugins SET signing_secret = ? WHERE id = ? AND signing_secret = ?",
			sealed, pluginID, clear).Error
	}
	if err != nil {
		slog.WarnContext(ctx, "encrypt legacy plugin signing secret", "plugin_id", pluginID, "err", err)
		return clear
	}
	return sealed
}

// UpgradeSecrets encrypts every signing secret still stored in clear (rows
// written before encryption at rest; enabled plugins are also upgraded on
// first use) and returns how many it encrypted. Without a secret key it does
// nothing.
func (r *Registry) UpgradeSecrets(ctx context.Context) (int, error) {
	if r.secrets == nil {
		return 0, nil
	}
	n := 0
	for {
		var rows []struct {
			ID     uuid.UUID `gorm:"column:id"`
			Secret string    `gorm:"column:signing_secret"`
		}
		if err := r.db.WithContext(ctx).Raw(`SELECT id, signing_secret FROM public.plugins
			WHERE signing_secret LIKE 'whsec\_%' ORDER BY id LIMIT 200`).Scan(&rows).Error; err != nil {
			return n, fmt.Errorf("upgrade plugin secrets: %w", err)
		}
		if len(rows) == 0 {
			return n, nil
		}
		changed := 0
		for _, row := range rows {
			sealed, err := r.secrets.Seal(row.ID, row.Secret)
			if err != nil {
				return n, fmt.Errorf("upgrade plugin secrets: %w", err)
			}
			// A row changed meanwhile (upgraded on use, deleted) is left
			// as it is.
			res := r.db.WithContext(ctx).Exec("UPDATE public.plugins SET signing_secret = ? WHERE id = ? AND signing_secret = ?",
				sealed, row.ID, row.Secret)
			if res.Error != nil {
				return n, fmt.Errorf("upgrade plugin secrets: %w", res.Error)
			}
			changed += int(res.RowsAffected)
		}
		n += changed
		if changed == 0 {
			return n, nil // nothing left that this pass could change
		}
	}
}
