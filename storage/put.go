package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// DefaultMaxBytes is the upload limit when PutOptions.MaxBytes is not set.
const DefaultMaxBytes int64 = 100 << 20

// sniffLen is how much of the body http.DetectContentType looks at.
const sniffLen = 512

// PutOptions controls Put. A nil *PutOptions means all defaults.
type PutOptions struct {
	// MaxBytes is the largest body accepted; one byte more fails the upload
	// with ErrTooLarge while reading. Zero or negative means DefaultMaxBytes:
	// there is no unlimited upload.
	MaxBytes int64

	// ContentType is what the client declared. It is used only when sniffing
	// the first 512 bytes is inconclusive (application/octet-stream) and it
	// is a well-formed media type.
	ContentType string

	// Inspect, if set, sees the first min(512, size) bytes and the content
	// type the object will be stored with, before anything is written to the
	// bucket. Use it for content-type allowlists and the document.validate
	// hook. A non-nil error aborts the upload and Put returns it unchanged
	// (not wrapped), so callers can compare it directly.
	Inspect func(head []byte, contentType string) error
}

// PutResult describes a stored object.
type PutResult struct {
	Size        int64  // bytes stored
	SHA256      string // lowercase hex
	MD5         string // lowercase hex
	ContentType string // sniffed, or the declared type if sniffing was inconclusive
}

// Put streams r into a new object at key and returns its size, hashes and
// content type. The key must come from DocumentKey.
//
// The body is never held in memory as a whole: it streams through the
// driver's bounded buffers (a 1 MiB copy buffer; S3 and Azure upload in
// 8 MiB parts, GCS in 16 MiB chunks), is counted and hashed on the way, and
// Put stops reading as soon as it exceeds MaxBytes. The object is written
// with IfNotExist; it exists only if Put returns nil. On any failure the
// write is aborted (context cancelled, then the writer closed, per gocloud's
// contract), so nothing is committed. Where
// the driver reports an MD5 or size after the write, Put compares them with
// what it streamed and deletes the object on a mismatch.
//
// Put returns ErrExists if key is taken, a *TooLargeError (ErrTooLarge) if
// the body is too large, Inspect's error unchanged, ErrIntegrity on a
// mismatch, and a wrapped read or bucket error otherwise.
func Put(ctx context.Context, b *blob.Bucket, key string, r io.Reader, opts *PutOptions) (*PutResult, error) {
	if opts == nil {
		opts = &PutOptions{}
	}
	limit := opts.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	body := &limitedReader{r: r, limit: limit}

	head := make([]byte, sniffLen)
	n, err := io.ReadFull(body, head)
	head = head[:n]
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, bodyError(key, err)
	}
	headIsAll := err != nil // the body ended within the head

	contentType := detectContentType(head, opts.ContentType)
	if opts.Inspect != nil {
		if err := opts.Inspect(head, contentType); err != nil {
			return nil, err
		}
	}

	// The upload gets its own context so a failure can abort it: cancelling
	// is what tells every driver not to commit on Close. The body reader
	// cancels it itself, before the driver sees a read error, because
	// blob.Bucket.Upload closes the writer after a failed copy.
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sha, md := sha256.New(), md5.New()
	src := &uploadBody{hashes: io.MultiWriter(sha, md), cancel: cancel}
	if headIsAll {
		src.r = bytes.NewReader(head)
	} else {
		src.r = io.MultiReader(bytes.NewReader(head), body)
	}
	// Upload rather than NewWriter+Write: it hands the reader to drivers
	// that stream it themselves (S3, Azure) and avoids gocloud v0.47's
	// azureblob writer, which panics in Close after a failed upload.
	err = b.Upload(uctx, key, src, &blob.WriterOptions{
		ContentType: contentType,
		IfNotExist:  true,
	})
	switch {
	case src.err != nil:
		if err == nil { // a driver that committed despite the cancel
			_ = cleanup(ctx, b, key)
		}
		return nil, bodyError(key, src.err)
	case err == nil:
	case gcerrors.Code(err) == gcerrors.FailedPrecondition || gcerrors.Code(err) == gcerrors.AlreadyExists:
		return nil, fmt.Errorf("put %s: %w: %w", key, ErrExists, err)
	default:
		return nil, fmt.Errorf("put %s: %w", key, err)
	}

	res := &PutResult{
		Size:        body.n,
		SHA256:      hex.EncodeToString(sha.Sum(nil)),
		MD5:         hex.EncodeToString(md.Sum(nil)),
		ContentType: contentType,
	}
	if err := verify(ctx, b, key, res.Size, md.Sum(nil)); err != nil {
		return nil, err
	}
	return res, nil
}

// verify compares what the bucket says it stored with what Put streamed.
// Drivers that do not report an MD5 (S3 multipart, Azure block lists) are
// checked on size only. A committed object that fails the check, or cannot
// be checked, is deleted: the caller will not record it, and a key nobody
// records is an orphan.
func verify(ctx context.Context, b *blob.Bucket, key string, size int64, sum []byte) error {
	attrs, err := b.Attributes(ctx, key)
	var mismatch error
	switch {
	case err != nil:
		mismatch = fmt.Errorf("put %s: read back attributes: %w", key, err)
	case attrs.Size != size:
		mismatch = fmt.Errorf("put %s: %w: bucket has %d bytes, streamed %d", key, ErrIntegrity, attrs.Size, size)
	case len(attrs.MD5) > 0 && !bytes.Equal(attrs.MD5, sum):
		mismatch = fmt.Errorf("put %s: %w: bucket MD5 %x, streamed %x", key, ErrIntegrity, attrs.MD5, sum)
	default:
		return nil
	}
	if derr := cleanup(ctx, b, key); derr != nil {
		return errors.Join(mismatch, fmt.Errorf("delete unverified object: %w", derr))
	}
	return mismatch
}

// cleanup deletes an object Put must not leave behind. ctx may be what
// failed, so the delete gets its own deadline; if it fails anyway the object
// is an orphan for the collector.
func cleanup(ctx context.Context, b *blob.Bucket, key string) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := b.Delete(dctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return err
	}
	return nil
}

// detectContentType sniffs head; the declared type wins only when sniffing
// says nothing (application/octet-stream) or the body is empty. The declared
// type is normalised and dropped if malformed.
func detectContentType(head []byte, declared string) string {
	const unknown = "application/octet-stream"
	sniffed := unknown
	if len(head) > 0 {
		sniffed = http.DetectContentType(head)
	}
	if sniffed != unknown || declared == "" {
		return sniffed
	}
	mt, params, err := mime.ParseMediaType(declared)
	if err != nil {
		return sniffed
	}
	if ct := mime.FormatMediaType(mt, params); ct != "" {
		return ct
	}
	return sniffed
}

func bodyError(key string, err error) error {
	if errors.Is(err, ErrTooLarge) {
		return err // already a *TooLargeError; the key adds nothing for the client
	}
	return fmt.Errorf("put %s: read body: %w", key, err)
}

// uploadBody hashes what the driver reads and, on the first read error,
// cancels the upload before passing the error on.
type uploadBody struct {
	r      io.Reader
	hashes io.Writer
	cancel context.CancelFunc
	err    error // first error other than io.EOF; read after Upload returned
}

func (u *uploadBody) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.hashes.Write(p[:n]) // hash.Hash writes never fail
	if err != nil && err != io.EOF && u.err == nil {
		u.err = err
		u.cancel()
	}
	return n, err
}

// limitedReader counts what it reads and fails with *TooLargeError once the
// count passes limit. It asks the source for at most limit+1 bytes in total,
// so an oversized body is never read further than one byte past the limit.
type limitedReader struct {
	r     io.Reader
	limit int64
	n     int64 // bytes returned so far
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n > l.limit {
		return 0, &TooLargeError{Limit: l.limit}
	}
	if rest := l.limit - l.n + 1; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	if l.n+int64(n) > l.limit {
		l.n += int64(n)
		return 0, &TooLargeError{Limit: l.limit}
	}
	l.n += int64(n)
	return n, err
}
