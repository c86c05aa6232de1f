package storage

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// cleanupTimeout bounds a delete that runs after the caller's context failed.
const cleanupTimeout = 30 * time.Second

// purgeConcurrency is how many deletes DeletePrefix keeps in flight: gocloud
// has no batch delete, and one request at a time makes a large tenant purge
// take hours on a remote bucket.
const purgeConcurrency = 8

// Open returns a reader for length bytes of the object at key, starting at
// offset; length -1 reads to the end. A length past the end is cut at the
// end. The reader reports Size (of the whole object), ContentType and
// ModTime, and must be closed. ctx governs every read, so give it the
// deadline of the whole download.
//
// Range requests: get the size from Stat (or the metadata row) and answer
// 416 for an offset at or past it before calling Open; drivers disagree on
// what such an offset does.
//
// Open returns ErrNotFound if there is no such object.
func Open(ctx context.Context, b *blob.Bucket, key string, offset, length int64) (*blob.Reader, error) {
	if offset < 0 {
		return nil, fmt.Errorf("open %s: negative offset %d", key, offset)
	}
	if length < 0 {
		length = -1
	}
	r, err := b.NewRangeReader(ctx, key, offset, length, nil)
	if err != nil {
		return nil, translate("open", key, err)
	}
	return r, nil
}

// Stat returns the attributes of the object at key (Size, ContentType,
// ModTime, ETag, MD5 where the driver has them). It returns ErrNotFound if
// there is no such object.
func Stat(ctx context.Context, b *blob.Bucket, key string) (*blob.Attributes, error) {
	a, err := b.Attributes(ctx, key)
	if err != nil {
		return nil, translate("stat", key, err)
	}
	return a, nil
}

// Delete removes the object at key. It returns ErrNotFound if there is no
// such object; callers that delete idempotently (the orphan collector)
// ignore that.
func Delete(ctx context.Context, b *blob.Bucket, key string) error {
	if err := b.Delete(ctx, key); err != nil {
		return translate("delete", key, err)
	}
	return nil
}

// ListPrefix calls fn for every object whose key starts with prefix, in key
// order, until fn returns an error (which ListPrefix returns). prefix must be
// non-empty and end in "/" (TenantPrefix, DocumentPrefix, "tenants/"): an
// empty prefix would reach every tenant and "tenants/1" would also match
// "tenants/10...". It returns ErrInvalidKey otherwise.
//
// fn may delete the key it was given. On file buckets the listing includes
// temporary files of uploads still in flight (suffix ".tmp", see OpenBucket);
// an orphan collector must spare objects younger than the longest upload,
// which modTime tells it.
func ListPrefix(ctx context.Context, b *blob.Bucket, prefix string, fn func(key string, size int64, modTime time.Time) error) error {
	if prefix == "" || !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("list %q: %w: prefix must be non-empty and end in /", prefix, ErrInvalidKey)
	}
	it := b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		if obj.IsDir {
			continue // not returned without a delimiter; be safe anyway
		}
		if err := fn(obj.Key, obj.Size, obj.ModTime); err != nil {
			return err
		}
	}
}

// DeletePrefix deletes every object under prefix (the rules of ListPrefix
// apply) and returns how many it deleted. Objects that vanish meanwhile are
// not errors. On the first failure it stops and returns it; running it again
// continues the purge.
func DeletePrefix(ctx context.Context, b *blob.Bucket, prefix string) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu       sync.Mutex
		deleted  int
		firstErr error
		wg       sync.WaitGroup
		keys     = make(chan string)
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	for range purgeConcurrency {
		wg.Go(func() {
			for key := range keys {
				err := b.Delete(ctx, key)
				if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
					fail(translate("delete", key, err))
					continue
				}
				if err == nil {
					mu.Lock()
					deleted++
					mu.Unlock()
				}
			}
		})
	}
	listErr := ListPrefix(ctx, b, prefix, func(key string, _ int64, _ time.Time) error {
		select {
		case keys <- key:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(keys)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		return deleted, firstErr // the list error, if any, is only our cancel
	}
	return deleted, listErr
}
