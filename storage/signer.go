package storage

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// BlobsPath is the route that serves URLs made by a Signer. The server
// handler calls Signer.Verify on the query and streams the returned key.
const BlobsPath = "/v1/blobs"

// MinSecretLen is the shortest secret NewSigner accepts (256 bits).
const MinSecretLen = 32

// signerDomain separates these MACs from any other use of the same secret.
const signerDomain = "promanage/storage/blob-url/v1"

// Signer makes and checks time-limited download URLs for buckets whose
// driver cannot sign (file://, mem://). A URL carries the key, the expiry
// (Unix seconds) and an HMAC-SHA256 over both under a server secret, so the
// key in it is opaque data the client cannot change. Signer is safe for
// concurrent use.
type Signer struct {
	secret []byte
	base   string // baseURL + BlobsPath, without query
}

// NewSigner returns a Signer with the given secret (at least MinSecretLen
// bytes; copied) whose URLs start with baseURL, the public origin of the API
// (for example "https://pm.example.com"; a path prefix is kept).
func NewSigner(secret []byte, baseURL string) (*Signer, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("new signer: secret has %d bytes, want at least %d", len(secret), MinSecretLen)
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("new signer: base URL %q must be an absolute http(s) URL without query", baseURL)
	}
	return &Signer{
		secret: append([]byte(nil), secret...),
		base:   strings.TrimSuffix(u.String(), "/") + BlobsPath,
	}, nil
}

// Sign returns a URL that lets its holder download key until expires.
func (s *Signer) Sign(key string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	q := url.Values{
		"key":     {key},
		"expires": {exp},
		"sig":     {base64.RawURLEncoding.EncodeToString(s.mac(key, exp))},
	}
	return s.base + "?" + q.Encode()
}

// Verify checks the query of a URL made by Sign and returns its key. It
// returns ErrInvalidSignature for a missing, repeated, malformed or tampered
// parameter, and ErrExpired for a genuine URL whose expiry is not after now.
// The MAC is compared in constant time before the expiry is looked at.
func (s *Signer) Verify(query url.Values, now time.Time) (string, error) {
	key, okKey := single(query, "key")
	exp, okExp := single(query, "expires")
	sig, okSig := single(query, "sig")
	if !okKey || !okExp || !okSig || key == "" {
		return "", fmt.Errorf("verify blob url: %w: missing parameter", ErrInvalidSignature)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(key, exp)) {
		return "", fmt.Errorf("verify blob url: %w", ErrInvalidSignature)
	}
	// exp is authentic now; it can still be malformed only if we signed it so.
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", fmt.Errorf("verify blob url: %w: bad expiry", ErrInvalidSignature)
	}
	if !now.Before(time.Unix(unix, 0)) {
		return "", fmt.Errorf("verify blob url: %w", ErrExpired)
	}
	return key, nil
}

func (s *Signer) mac(key, exp string) []byte {
	m := hmac.New(sha256.New, s.secret)
	// NUL-separated: exp is digits only, so the split point is unambiguous.
	m.Write([]byte(signerDomain + "\x00" + key + "\x00" + exp))
	return m.Sum(nil)
}

func single(q url.Values, name string) (string, bool) {
	v, ok := q[name]
	if !ok || len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// SignedURL returns a URL that downloads the object at key until expiry has
// passed. It uses the driver's own signing where there is one (S3 presigned
// URLs, GCS V4/V2 signed URLs, Azure SAS); for drivers without it (file://,
// mem://, and gs:// without a signing identity) it uses fallback, whose URLs
// the server itself must serve at BlobsPath. With a nil fallback those
// drivers return ErrSignedURLUnsupported.
//
// SignedURL does not check that the object exists.
func SignedURL(ctx context.Context, b *blob.Bucket, key string, expiry time.Duration, fallback *Signer) (string, error) {
	if expiry <= 0 {
		return "", fmt.Errorf("signed url %s: expiry %v must be positive", key, expiry)
	}
	u, err := b.SignedURL(ctx, key, &blob.SignedURLOptions{Method: http.MethodGet, Expiry: expiry})
	if err == nil {
		return u, nil
	}
	if gcerrors.Code(err) != gcerrors.Unimplemented {
		return "", fmt.Errorf("signed url %s: %w", key, err)
	}
	if fallback == nil {
		return "", fmt.Errorf("signed url %s: %w: %w", key, ErrSignedURLUnsupported, err)
	}
	return fallback.Sign(key, time.Now().Add(expiry)), nil
}
