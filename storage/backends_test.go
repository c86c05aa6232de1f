package storage

import (
	"context"
	"testing"

	"gocloud.dev/blob"

	"github.com/promanage/promanage/storage/storagetest"
)

// A backend is one bucket of the conformance suite, opened through
// OpenBucket with the URL an operator would configure, and what the suite
// may expect of its server.
type backend struct {
	name   string
	url    string // what OpenBucket was given
	bucket *blob.Bucket

	// nativeSignedURLs: the driver signs URLs itself; otherwise SignedURL
	// falls back to our Signer.
	nativeSignedURLs bool
	// checksSignatures: the emulator rejects a tampered native signed URL.
	checksSignatures bool
	// reachSignedURL rewrites a native signed URL so it reaches the
	// emulator (nil: use as is).
	reachSignedURL func(string) string
}

// openBackend opens a test server's bucket with OpenBucket and closes it at
// cleanup.
func openBackend(t *testing.T, sb storagetest.Bucket) *backend {
	t.Helper()
	b, err := OpenBucket(context.Background(), sb.URL)
	if err != nil {
		t.Fatalf("OpenBucket(%s): %v", sb.URL, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &backend{name: sb.Name, url: sb.URL, bucket: b, nativeSignedURLs: sb.NativeSignedURLs,
		checksSignatures: sb.ChecksSignatures, reachSignedURL: sb.Reach}
}

// The file bucket's directory does not exist yet: OpenBucket must create it.
func fileBackend(t *testing.T) *backend  { return openBackend(t, storagetest.File(t)) }
func memBackend(t *testing.T) *backend   { return openBackend(t, storagetest.Mem(t)) }
func s3Backend(t *testing.T) *backend    { return openBackend(t, storagetest.S3(t)) }
func gcsBackend(t *testing.T) *backend   { return openBackend(t, storagetest.GCS(t)) }
func azureBackend(t *testing.T) *backend { return openBackend(t, storagetest.Azure(t)) }
