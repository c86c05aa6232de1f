package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

const (
	// documentTransferTimeout bounds one upload or download.
	documentTransferTimeout = time.Hour
	// documentDeleteGrace: a deleted document's blobs are purged after it.
	documentDeleteGrace = 7 * 24 * time.Hour
	// documentGCInterval is how often the worker collects garbage.
	documentGCInterval = 10 * time.Minute
)

// documentDefaults are the platform's default storage limits
// (PROMANAGE_STORAGE_QUOTA_BYTES, PROMANAGE_MAX_FILE_BYTES); a tenant's own
// settings in public.tenants.settings override them.
func (c *Config) documentDefaults() (tenant.StorageSettings, error) {
	if c.StorageQuotaBytes <= 0 || c.MaxFileBytes <= 0 {
		return tenant.StorageSettings{}, fmt.Errorf("PROMANAGE_STORAGE_QUOTA_BYTES and PROMANAGE_MAX_FILE_BYTES must be positive numbers of bytes")
	}
	return tenant.StorageSettings{QuotaBytes: int64(c.StorageQuotaBytes), MaxFileBytes: int64(c.MaxFileBytes)}, nil
}

// checkDocumentConfig refuses a configuration that could not work: limits
// that do not parse, or a secret key too short to sign URLs. Without any
// secret key, buckets that cannot sign (file://, mem://) hand out no
// download URLs; the rest of the document API works.
func (a *app) checkDocumentConfig() error {
	if _, err := a.cfg.documentDefaults(); err != nil {
		return err
	}
	if k := a.cfg.SecretKey; k != "" && len(k) < storage.MinSecretLen {
		return fmt.Errorf("PROMANAGE_SECRET_KEY must be at least %d bytes (it has %d)", storage.MinSecretLen, len(k))
	}
	if a.cfg.SecretKey == "" {
		if u, err := url.Parse(a.cfg.blobURL()); err == nil && (u.Scheme == "file" || u.Scheme == "mem") {
			slog.Warn("PROMANAGE_SECRET_KEY is not set: signed document URLs are unavailable for " + u.Scheme + ":// buckets")
		}
	}
	return nil
}

func (a *app) documentService() *core.DocumentService {
	defaults, _ := a.cfg.documentDefaults() // checked by checkDocumentConfig at start
	return &core.DocumentService{
		DB:            a.db,
		Bucket:        a.bucket,
		Registry:      a.registry,
		Defaults:      defaults,
		Events:        a.events,
		Hooks:         a.validationHooks(),
		UploadTimeout: documentTransferTimeout,
		DeleteGrace:   documentDeleteGrace,
	}
}

// documentDeps wires the documents area's services into the API.
func (a *app) documentDeps() api.DocumentDeps {
	return api.DocumentDeps{
		Service:         a.documentService(),
		SecretKey:       []byte(a.cfg.SecretKey),
		TransferTimeout: documentTransferTimeout,
	}
}

// documentConsumers are the documents area's outbox consumers (by name):
// none; document.uploaded goes to the plugins' notification consumer.
func (a *app) documentConsumers() map[string]core.Consumer { return nil }

// documentJobs are the documents area's background jobs run by the worker:
// the collector of deleted documents' blobs, crashed uploads and orphans.
func (a *app) documentJobs() []func(ctx context.Context) error {
	return []func(ctx context.Context) error{func(ctx context.Context) error {
		svc := a.documentService()
		tick := time.NewTicker(documentGCInterval)
		defer tick.Stop()
		for {
			a.collectDocuments(ctx, svc)
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}}
}

// collectDocuments runs one collection over every live tenant. A failure
// in one tenant is logged and retried next round; it does not stop others.
func (a *app) collectDocuments(ctx context.Context, svc *core.DocumentService) {
	ts, err := a.registry.List(ctx, tenant.StateActive, tenant.StateSuspended)
	if err != nil {
		if ctx.Err() == nil {
			slog.Error("document gc: list tenants", "err", err)
		}
		return
	}
	// Older than any upload could be: a reservation outlives its upload,
	// and this outlives the reservation.
	minAge := svc.ReservationTTL() + 10*time.Minute
	for _, t := range ts {
		if ctx.Err() != nil {
			return
		}
		if t.SchemaVersion < core.DocumentsSchemaVersion {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		st, err := svc.Collect(tctx, t.Scope(), minAge)
		cancel()
		if err != nil {
			slog.Error("document gc", "tenant", t.Slug, "err", err)
		}
		if st != (core.GCStats{}) {
			slog.Info("document gc", "tenant", t.Slug, "purged_documents", st.PurgedDocuments,
				"expired_uploads", st.ExpiredReservations, "orphan_blobs", st.OrphanBlobs)
		}
	}
}
