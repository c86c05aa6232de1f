// Package storage keeps document contents in a gocloud.dev blob bucket.
//
// The bucket is opened from a URL (file://, mem://, s3://, gs://, azblob://),
// so the backend is configuration, not code. The package builds object keys
// from server-generated IDs, streams uploads into the bucket with a size
// limit, hashing and a no-overwrite precondition, streams (ranged) downloads
// back out, lists and deletes by prefix for garbage collection and tenant
// purge, and hands out time-limited download URLs.
//
// What it must never do:
//   - build a key from client input (a file name, a path, a query value):
//     keys come only from DocumentKey, DocumentPrefix and TenantPrefix, or from
//     a URL this server signed and Signer.Verify accepted;
//   - buffer a whole object in memory, or read past the size limit of an upload;
//   - report an upload as stored unless the blob writer's Close returned nil,
//     or overwrite an existing object (every version is a new, immutable key);
//   - wrap a *blob.Bucket in an interface of its own, or use PrefixedBucket per
//     request (it closes the bucket it wraps).
//
// Infrastructure errors are translated here, once: a missing object is
// ErrNotFound, an existing one ErrExists, an oversized upload ErrTooLarge
// (see TooLargeError). Everything else is returned wrapped, with its gocloud
// error code intact for gcerrors.Code.
package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	// Driver registration for blob.DefaultURLMux: the only init-time side
	// effect the architecture allows.
	_ "gocloud.dev/blob/azureblob"
	_ "gocloud.dev/blob/fileblob"
	_ "gocloud.dev/blob/gcsblob"
	_ "gocloud.dev/blob/memblob"
	_ "gocloud.dev/blob/s3blob"
)

// Errors returned by this package. Test them with errors.Is; the api package
// maps them to HTTP statuses.
var (
	// ErrNotFound: no object with that key.
	ErrNotFound = errors.New("storage: object not found")
	// ErrExists: Put refused to overwrite an existing object.
	ErrExists = errors.New("storage: object already exists")
	// ErrTooLarge: an upload exceeded PutOptions.MaxBytes. The concrete error
	// is a *TooLargeError carrying the limit.
	ErrTooLarge = errors.New("storage: object too large")
	// ErrIntegrity: the bucket reported a size or MD5 that differs from what
	// Put streamed; the object was deleted again.
	ErrIntegrity = errors.New("storage: stored object does not match upload")
	// ErrInvalidKey: a key or prefix that this package does not accept.
	ErrInvalidKey = errors.New("storage: invalid key")
	// ErrSignedURLUnsupported: the bucket cannot sign URLs and no fallback
	// Signer was given.
	ErrSignedURLUnsupported = errors.New("storage: signed URLs not supported by this bucket")
	// ErrInvalidSignature: Signer.Verify rejected a URL (missing, malformed
	// or tampered parameters).
	ErrInvalidSignature = errors.New("storage: invalid blob URL signature")
	// ErrExpired: Signer.Verify got a correctly signed URL past its expiry.
	ErrExpired = errors.New("storage: blob URL expired")
)

// TooLargeError is the error Put returns when the body exceeds the limit.
// errors.Is(err, ErrTooLarge) reports true for it.
type TooLargeError struct {
	Limit int64 // PutOptions.MaxBytes in force
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("storage: object too large (limit %d bytes)", e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// OpenBucket opens the bucket that rawURL names. Supported schemes are file,
// mem, s3, gs and azblob, with the query options of the gocloud.dev drivers,
// for example
//
//	file:///var/lib/promanage/blobs
//	s3://bucket?region=us-east-1&endpoint=http://127.0.0.1:9000&use_path_style=true&disable_https=true
//	gs://bucket                  (STORAGE_EMULATOR_HOST selects an emulator)
//	azblob://container?protocol=http&domain=127.0.0.1:10000  (AZURE_STORAGE_ACCOUNT/_KEY)
//
// For file:// it creates the directory if missing (create_dir) and writes
// temporary files next to their final path (no_tmp_dir), so the rename that
// commits an upload never crosses a filesystem; either can be overridden in
// the URL. Temporary files of in-flight or crashed uploads therefore show up
// in ListPrefix on file buckets, with a ".tmp" suffix.
//
// The caller owns the bucket and must Close it.
func OpenBucket(ctx context.Context, rawURL string) (*blob.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes the URL, which may hold credentials in its query.
		return nil, errors.New("open bucket: malformed bucket URL")
	}
	switch u.Scheme {
	case "file":
		q := u.Query()
		if !q.Has("create_dir") {
			q.Set("create_dir", "true")
		}
		if !q.Has("no_tmp_dir") {
			q.Set("no_tmp_dir", "true")
		}
		u.RawQuery = q.Encode()
	case "mem", "s3", "gs", "azblob":
	default:
		return nil, fmt.Errorf("open bucket: unsupported scheme %q (want file, mem, s3, gs or azblob)", u.Scheme)
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("open bucket %s://%s: %w", u.Scheme, u.Host, err)
	}
	return b, nil
}

// translate wraps a gocloud error once, adding ErrNotFound when the driver
// says the object does not exist. The cause stays in the chain for logs and
// gcerrors.Code.
func translate(op, key string, err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return fmt.Errorf("%s %s: %w: %w", op, key, ErrNotFound, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}
