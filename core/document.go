package core

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
	"gorm.io/gorm"

	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// Limits of document input.
const (
	MaxDocumentTitle    = 200      // runes
	MaxMetadataBytes    = 16 << 10 // compact JSON
	MaxMetadataDepth    = 8
	MaxMetadataKeys     = 256 // members in all objects together
	MaxMetadataKeyBytes = 128
	MaxFilenameBytes    = 255
	// HookFirstBytes is how much of an upload document.validate sees.
	HookFirstBytes = 4 << 10
)

// DocumentsSchemaVersion is the tenant schema version that has the document
// tables; older tenant schemas are skipped by the collector.
const DocumentsSchemaVersion = 4

// Document is a document with the metadata of its current version.
type Document struct {
	ID          uuid.UUID `json:"id"`
	ProjectID   uuid.UUID `json:"project_id"`
	Title       string    `json:"title"`
	Metadata    RawJSON   `json:"metadata"`
	Version     int       `json:"version"` // the current version (or, answering an upload, the new one)
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	ContentType string    `json:"content_type"`
	Filename    string    `json:"filename"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   uuid.UUID `json:"created_by"`
	UpdatedAt   time.Time `json:"updated_at"`
	// ETag is the document row's version: it changes with every edit and
	// every new version. The content's ETag is the sha256.
	ETag       string `json:"etag"`
	RowVersion int64  `json:"-"`
}

// DocumentVersion is one immutable version of a document.
type DocumentVersion struct {
	DocumentID   uuid.UUID `json:"document_id" gorm:"column:document_id"`
	Version      int       `json:"version" gorm:"column:version"`
	Size         int64     `json:"size" gorm:"column:size"`
	SHA256       string    `json:"sha256" gorm:"column:sha256"`
	MD5          string    `json:"-" gorm:"column:md5"`
	ContentType  string    `json:"content_type" gorm:"column:content_type"`
	Filename     string    `json:"filename" gorm:"column:filename"`
	RestoredFrom *int      `json:"restored_from,omitempty" gorm:"column:restored_from"`
	CreatedBy    uuid.UUID `json:"created_by" gorm:"column:created_by"`
	CreatedAt    time.Time `json:"created_at" gorm:"column:created_at"`
}

// Upload is the content of a new document or version. Body is read once,
// streaming, and never past the tenant's limits.
type Upload struct {
	// Title and Metadata apply to a new document only. An empty title
	// defaults to the file name; empty metadata to {}.
	Title    string
	Metadata RawJSON
	// Filename is the client's name for the file: shown and used for
	// Content-Disposition, never part of an object key.
	Filename string
	// ContentType is what the client declared; the stored type is sniffed
	// from the bytes and the declared one is used only when sniffing says
	// nothing.
	ContentType string
	Body        io.Reader
	// DeclaredBytes is an upper bound of the body's size known before it is
	// read (the request's Content-Length), or -1 if unknown.
	DeclaredBytes int64
	// Finish, if set, runs after the bytes were stored and before the
	// version is committed; an error aborts the upload (the blob is removed)
	// and is returned unchanged.
	Finish func() error
}

// DocumentUpdate edits a document's title and metadata (nil: unchanged).
type DocumentUpdate struct {
	Title    *string
	Metadata *RawJSON
}

// DocumentService manages documents and their versions: metadata rows in
// the tenant's schema, bytes in the bucket.
type DocumentService struct {
	DB       *gorm.DB
	Bucket   *blob.Bucket
	Registry *tenant.Registry
	// Defaults are the platform's storage limits; a tenant's own settings
	// override them.
	Defaults tenant.StorageSettings
	Events   EventSink
	Hooks    ValidationHooks
	// UploadTimeout bounds one upload (default 1h). A reservation lives a
	// little longer, so the collector never takes a live upload for a
	// crashed one.
	UploadTimeout time.Duration
	// DeleteGrace is how long a deleted document's blobs are kept before the
	// collector purges them (default 7 days).
	DeleteGrace time.Duration
}

func (s *DocumentService) uploadTimeout() time.Duration {
	if s.UploadTimeout > 0 {
		return s.UploadTimeout
	}
	return time.Hour
}

// ReservationTTL is how long an upload's reservation holds its version
// number and quota.
func (s *DocumentService) ReservationTTL() time.Duration { return s.uploadTimeout() + 10*time.Minute }

func (s *DocumentService) deleteGrace() time.Duration {
	if s.DeleteGrace > 0 {
		return s.DeleteGrace
	}
	return 7 * 24 * time.Hour
}

// Limits returns a tenant's storage settings with the platform defaults
// filled in.
func (s *DocumentService) Limits(ctx context.Context, sc tenant.Scope) (tenant.StorageSettings, error) {
	set, err := s.Registry.StorageSettings(ctx, sc.ID)
	if err != nil {
		return tenant.StorageSettings{}, fmt.Errorf("storage limits: %w", err)
	}
	return set.WithDefaults(s.Defaults), nil
}

// Usage returns the bytes a tenant's documents use: every stored version
// (deleted documents count until their blobs are purged) plus the
// reservations of uploads in flight.
func (s *DocumentService) Usage(ctx context.Context, sc tenant.Scope) (int64, error) {
	return usage(s.DB.WithContext(ctx), sc)
}

func usage(db *gorm.DB, sc tenant.Scope) (int64, error) {
	var used int64
	err := db.Raw(`SELECT (SELECT coalesce(sum(size), 0) FROM ` + sc.Table("document_versions") + `)
		+ (SELECT coalesce(sum(reserved_bytes), 0) FROM ` + sc.Table("document_uploads") + ` WHERE expires_at > now())`).Scan(&used).Error
	if err != nil {
		return 0, fmt.Errorf("storage usage: %w", err)
	}
	return used, nil
}

// ---- validation ----

// ValidateMetadata checks that raw is a JSON object within the limits
// (MaxMetadataBytes compacted, MaxMetadataDepth levels, MaxMetadataKeys
// members, keys of at most MaxMetadataKeyBytes) and returns it compacted.
// Empty input is {}. It returns EINVALID naming field "metadata".
func ValidateMetadata(raw []byte) (RawJSON, error) {
	bad := func(msg string) (RawJSON, error) {
		return "", Invalid(FieldError{Field: "metadata", Message: msg})
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return "{}", nil
	}
	if len(raw) > 4*MaxMetadataBytes { // whitespace allowance; compacted size is checked below
		return bad(fmt.Sprintf("must be at most %d bytes", MaxMetadataBytes))
	}
	if err := checkMetadataShape(raw); err != nil {
		return bad(err.Error())
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return bad("must be a JSON object")
	}
	if buf.Len() > MaxMetadataBytes {
		return bad(fmt.Sprintf("must be at most %d bytes", MaxMetadataBytes))
	}
	if !utf8.Valid(buf.Bytes()) {
		return bad("must be valid UTF-8")
	}
	return RawJSON(buf.String()), nil
}

// checkMetadataShape walks the JSON tokens of raw: a single object, at most
// MaxMetadataDepth levels, MaxMetadataKeys keys of 1-MaxMetadataKeyBytes
// bytes.
func checkMetadataShape(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct{ object, expectKey bool }
	var stack []frame
	keys, tokens := 0, 0
	// valueDone marks the end of a value in the enclosing container.
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return errors.New("must be a JSON object")
		}
		tokens++
		if tokens == 1 {
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return errors.New("must be a JSON object")
			}
		} else if len(stack) == 0 {
			return errors.New("must be a single JSON object")
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
			if k, ok := tok.(string); ok {
				keys++
				if keys > MaxMetadataKeys {
					return fmt.Errorf("must have at most %d keys", MaxMetadataKeys)
				}
				if len(k) == 0 || len(k) > MaxMetadataKeyBytes {
					return fmt.Errorf("keys must be 1-%d bytes", MaxMetadataKeyBytes)
				}
				stack[n-1].expectKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= MaxMetadataDepth {
				return fmt.Errorf("must nest at most %d levels", MaxMetadataDepth)
			}
			stack = append(stack, frame{object: tok == json.Delim('{'), expectKey: tok == json.Delim('{')})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
	if tokens == 0 {
		return errors.New("must be a JSON object")
	}
	return nil
}

func validateTitle(title string) (string, error) {
	title = strings.TrimSpace(title)
	if title == "" || utf8.RuneCountInString(title) > MaxDocumentTitle || !utf8.ValidString(title) {
		return "", Invalid(FieldError{Field: "title", Message: fmt.Sprintf("must be 1-%d characters", MaxDocumentTitle)})
	}
	for _, r := range title {
		if unicode.IsControl(r) {
			return "", Invalid(FieldError{Field: "title", Message: "must not contain control characters"})
		}
	}
	return title, nil
}

// CleanFilename keeps the last path element of a client's file name,
// without control characters and cut to MaxFilenameBytes. It is for display
// and Content-Disposition only.
func CleanFilename(name string) string {
	name = strings.ToValidUTF8(name, "")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '"' {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if name == "." || name == ".." {
		return ""
	}
	for len(name) > MaxFilenameBytes {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}

// ---- reads ----

type documentRow struct {
	ID             uuid.UUID `gorm:"column:id"`
	ProjectID      uuid.UUID `gorm:"column:project_id"`
	Title          string    `gorm:"column:title"`
	Metadata       string    `gorm:"column:metadata"`
	CurrentVersion int       `gorm:"column:current_version"`
	RowVersion     int64     `gorm:"column:row_version"`
	CreatedBy      uuid.UUID `gorm:"column:created_by"`
	CreatedAt      time.Time `gorm:"column:created_at"`
	UpdatedAt      time.Time `gorm:"column:updated_at"`
	Size           int64     `gorm:"column:size"`
	SHA256         string    `gorm:"column:sha256"`
	ContentType    string    `gorm:"column:content_type"`
	Filename       string    `gorm:"column:filename"`
	SameMetadata   bool      `gorm:"column:same_metadata"`
}

func (r *documentRow) document() *Document {
	return &Document{ID: r.ID, ProjectID: r.ProjectID, Title: r.Title, Metadata: RawJSON(r.Metadata),
		Version: r.CurrentVersion, Size: r.Size, SHA256: r.SHA256, ContentType: r.ContentType, Filename: r.Filename,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(),
		ETag: ETag(r.RowVersion), RowVersion: r.RowVersion}
}

func documentSelect(sc tenant.Scope) string {
	return `SELECT d.id, d.project_id, d.title, d.metadata::text AS metadata, d.current_version, d.version AS row_version,
		d.created_by, d.created_at, d.updated_at, v.size, v.sha256, v.content_type, v.filename
		FROM ` + sc.Table("documents") + ` d JOIN ` + sc.Table("document_versions") + ` v
		ON v.document_id = d.id AND v.version = d.current_version `
}

var errDocNotFound = &Error{Code: ENOTFOUND, Message: "document not found"}

// Get returns a live document with its current version. It returns
// ENOTFOUND if there is no such live document in the tenant.
func (s *DocumentService) Get(ctx context.Context, sc tenant.Scope, id uuid.UUID) (*Document, error) {
	var rows []documentRow
	if err := s.DB.WithContext(ctx).Raw(documentSelect(sc)+"WHERE d.id = ? AND d.deleted_at IS NULL", id).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("get document: %w", err)
	}
	if len(rows) == 0 {
		return nil, errDocNotFound
	}
	return rows[0].document(), nil
}

// List returns the live documents of a live project, newest first. It
// returns ENOTFOUND if the project does not exist and EINVALID for a bad
// cursor.
func (s *DocumentService) List(ctx context.Context, sc tenant.Scope, projectID uuid.UUID, limit int, cursor string) (*Page[Document], error) {
	if err := s.projectExists(s.DB.WithContext(ctx), sc, projectID, false); err != nil {
		return nil, err
	}
	limit = ClampLimit(limit)
	q := documentSelect(sc) + "WHERE d.project_id = ? AND d.deleted_at IS NULL"
	args := []any{projectID}
	if cursor != "" {
		id, err := decodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		q += " AND d.id < ?"
		args = append(args, id)
	}
	q += " ORDER BY d.id DESC LIMIT ?"
	args = append(args, limit+1)
	var rows []documentRow
	if err := s.DB.WithContext(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	items := make([]Document, len(rows))
	for i := range rows {
		items[i] = *rows[i].document()
	}
	return pageOf(items, limit, func(d Document) uuid.UUID { return d.ID }), nil
}

func (s *DocumentService) projectExists(db *gorm.DB, sc tenant.Scope, id uuid.UUID, lock bool) error {
	q := "SELECT count(*) FROM " + sc.Table("projects") + " WHERE id = ? AND deleted_at IS NULL"
	if lock {
		q = "SELECT count(*) FROM (SELECT 1 FROM " + sc.Table("projects") + " WHERE id = ? AND deleted_at IS NULL FOR SHARE) p"
	}
	var n int64
	if err := db.Raw(q, id).Scan(&n).Error; err != nil {
		return fmt.Errorf("find project: %w", err)
	}
	if n == 0 {
		return &Error{Code: ENOTFOUND, Message: "project not found"}
	}
	return nil
}

// Versions returns a live document's versions, newest first. It returns
// ENOTFOUND if there is no such live document and EINVALID for a bad cursor.
func (s *DocumentService) Versions(ctx context.Context, sc tenant.Scope, id uuid.UUID, limit int, cursor string) (*Page[DocumentVersion], error) {
	limit = ClampLimit(limit)
	before := math.MaxInt32
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		n, perr := strconv.Atoi(strings.TrimPrefix(string(b), "v"))
		if err != nil || perr != nil || !strings.HasPrefix(string(b), "v") || n < 1 {
			return nil, Invalid(FieldError{Field: "cursor", Message: "invalid cursor"})
		}
		before = n
	}
	var rows []DocumentVersion
	err := s.DB.WithContext(ctx).Raw(`SELECT v.* FROM `+sc.Table("document_versions")+` v
		JOIN `+sc.Table("documents")+` d ON d.id = v.document_id AND d.deleted_at IS NULL
		WHERE v.document_id = ? AND v.version < ? ORDER BY v.version DESC LIMIT ?`, id, before, limit+1).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list document versions: %w", err)
	}
	if len(rows) == 0 {
		if _, err := s.Get(ctx, sc, id); err != nil {
			return nil, err
		}
	}
	p := &Page[DocumentVersion]{Items: rows}
	if len(rows) > limit {
		p.Items = rows[:limit]
		p.NextCursor = base64.RawURLEncoding.EncodeToString([]byte("v" + strconv.Itoa(rows[limit-1].Version)))
	}
	if p.Items == nil {
		p.Items = []DocumentVersion{}
	}
	for i := range p.Items {
		p.Items[i].CreatedAt = p.Items[i].CreatedAt.UTC()
	}
	return p, nil
}

// Version returns version n of a live document, or its current version for
// n = 0. It returns ENOTFOUND if the document or the version does not exist.
func (s *DocumentService) Version(ctx context.Context, sc tenant.Scope, id uuid.UUID, n int) (*DocumentVersion, error) {
	if n < 0 {
		return nil, &Error{Code: ENOTFOUND, Message: "version not found"}
	}
	var rows []DocumentVersion
	err := s.DB.WithContext(ctx).Raw(`SELECT v.* FROM `+sc.Table("documents")+` d JOIN `+sc.Table("document_versions")+` v
		ON v.document_id = d.id AND v.version = CASE WHEN ? = 0 THEN d.current_version ELSE ? END
		WHERE d.id = ? AND d.deleted_at IS NULL`, n, n, id).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("get document version: %w", err)
	}
	if len(rows) == 0 {
		if n == 0 {
			return nil, errDocNotFound
		}
		if _, err := s.Get(ctx, sc, id); err != nil {
			return nil, err
		}
		return nil, &Error{Code: ENOTFOUND, Message: fmt.Sprintf("version %d not found", n)}
	}
	rows[0].CreatedAt = rows[0].CreatedAt.UTC()
	return &rows[0], nil
}

// Open returns a reader of length bytes (-1: to the end) of a version's
// content from offset. The caller validates the range against v.Size first
// (storage.Open's contract) and closes the reader; ctx governs every read.
func (s *DocumentService) Open(ctx context.Context, tenantID uuid.UUID, v *DocumentVersion, offset, length int64) (*blob.Reader, error) {
	r, err := storage.Open(ctx, s.Bucket, storage.DocumentKey(tenantID, v.DocumentID, v.Version), offset, length)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			// A committed version without its blob: the bucket lost it.
			return nil, fmt.Errorf("document %s v%d: blob missing: %w", v.DocumentID, v.Version, err)
		}
		return nil, fmt.Errorf("open document content: %w", err)
	}
	return r, nil
}

// SignedURL returns a URL that downloads version n (0: current) of a live
// document until expiry, signed by the bucket where it can sign and by
// fallback otherwise. It returns ENOTFOUND, or EUNAVAILABLE when neither can
// sign.
func (s *DocumentService) SignedURL(ctx context.Context, sc tenant.Scope, id uuid.UUID, n int, expiry time.Duration, fallback *storage.Signer) (string, *DocumentVersion, error) {
	v, err := s.Version(ctx, sc, id, n)
	if err != nil {
		return "", nil, err
	}
	u, err := storage.SignedURL(ctx, s.Bucket, storage.DocumentKey(sc.ID, id, v.Version), expiry, fallback)
	if errors.Is(err, storage.ErrSignedURLUnsupported) {
		return "", nil, &Error{Code: EUNAVAILABLE, Message: "signed URLs are not available: the server has no PROMANAGE_SECRET_KEY and the bucket cannot sign", Err: err}
	} else if err != nil {
		return "", nil, fmt.Errorf("sign document url: %w", err)
	}
	return u, v, nil
}

// ---- uploads ----

// Create stores a new document of a live project with its first version. It
// returns ENOTFOUND (project), EINVALID (title, metadata, a body cut off),
// ETOOLARGE (over the tenant's file size limit), EQUOTA (over the storage
// quota, refused before the upload consumes any), EUNSUPPORTED (content type
// not in the tenant's allowlist), EPLUGINREJECTED, or the error of
// in.Finish. On any error nothing is visible and no blob is left behind
// (or, if the bucket fails to delete it, the collector removes it).
func (s *DocumentService) Create(ctx context.Context, sc tenant.Scope, actor Actor, projectID uuid.UUID, in Upload) (*Document, error) {
	title := in.Title
	filename := CleanFilename(in.Filename)
	if strings.TrimSpace(title) == "" {
		title = filename
	}
	if strings.TrimSpace(title) == "" {
		title = "untitled"
	}
	title, err := validateTitle(title)
	if err != nil {
		return nil, err
	}
	meta, err := ValidateMetadata([]byte(in.Metadata))
	if err != nil {
		return nil, err
	}
	st, err := loadProjectState(s.DB.WithContext(ctx), sc, projectID, "")
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	view := documentHookView{ProjectID: projectID, Title: title, Metadata: meta, Filename: filename}
	ver, err := s.storeUpload(ctx, sc, actor, id, true, in, view, ValidationRequest{Operation: OpCreate, Project: st.context()})
	if err != nil {
		return nil, err
	}
	ver.Filename = filename
	now := time.Now().UTC()
	var doc *Document
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if err := tx.Exec(`INSERT INTO `+sc.Table("documents")+` (id, project_id, title, metadata, current_version, next_version,
			version, created_by, created_at, updated_at) VALUES (?, ?, ?, ?::jsonb, 1, 2, 1, ?, ?, ?)`,
			id, projectID, title, string(meta), actor.UserID, now, now).Error; err != nil {
			return err
		}
		// The project may have been deleted while the bytes streamed. FOR
		// SHARE holds off a deletion until this commits, so the deletion's
		// cascade to documents sees this one.
		if err := s.projectExists(tx, sc, projectID, true); err != nil {
			return err
		}
		doc = &Document{ID: id, ProjectID: projectID, Title: title, Metadata: meta, CreatedAt: now, CreatedBy: actor.UserID,
			UpdatedAt: now, RowVersion: 1, ETag: ETag(1)}
		return s.commitVersion(tx, sc, actor, doc, ver, "document.create")
	})
	if err != nil {
		s.discard(ctx, sc, id, ver.Version, true)
		return nil, commitErr("create document", err)
	}
	return doc, nil
}

// AddVersion stores a new version of a live document; concurrent uploads
// get distinct, consecutive numbers. It returns the document as of the new
// version, and the errors of Create (ENOTFOUND for the document).
func (s *DocumentService) AddVersion(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, in Upload) (*Document, error) {
	cur, st, err := s.loadForChange(ctx, sc, id)
	if err != nil {
		return nil, err
	}
	filename := CleanFilename(in.Filename)
	view := documentHookView{ProjectID: cur.ProjectID, Title: cur.Title, Metadata: cur.Metadata, Filename: filename}
	ver, err := s.storeUpload(ctx, sc, actor, id, false, in, view, ValidationRequest{Operation: OpAddVersion, Current: cur, Project: st.context()})
	if err != nil {
		return nil, err
	}
	ver.Filename = filename
	doc, err := s.commitExisting(ctx, sc, actor, id, ver, "document.version", cur)
	if errors.Is(err, errStale) {
		// The bytes are streamed and gone: an upload cannot run again.
		return nil, &Error{Code: ECONFLICT, Message: "the document's title or metadata changed while the version was uploaded; upload it again"}
	}
	return doc, err
}

// loadForChange reads a live document and its project's state, the
// "current" and "project" of a document.validate request.
func (s *DocumentService) loadForChange(ctx context.Context, sc tenant.Scope, id uuid.UUID) (*Document, *projectState, error) {
	cur, err := s.Get(ctx, sc, id)
	if err != nil {
		return nil, nil, err
	}
	st, err := loadProjectState(s.DB.WithContext(ctx), sc, cur.ProjectID, "")
	if ErrorCode(err) == ENOTFOUND {
		return nil, nil, errDocNotFound // its project was deleted meanwhile
	} else if err != nil {
		return nil, nil, err
	}
	return cur, st, nil
}

// Restore makes a new version whose content is version n, copied inside
// the bucket. The document.validate hook runs before anything is reserved,
// on the document and project as loaded; if the document's title or
// metadata changed before the version is committed, the copy is discarded
// and the restore runs again (at most MaxWriteAttempts times). It returns
// ENOTFOUND, EQUOTA, EUNSUPPORTED (the type is no longer allowed),
// EPLUGINREJECTED, ECONFLICT, or an error if the copy fails.
func (s *DocumentService) Restore(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, n int) (*Document, error) {
	if n < 1 {
		return nil, &Error{Code: ENOTFOUND, Message: "version not found"}
	}
	var doc *Document
	err := retryStale("the document", func() error {
		src, err := s.Version(ctx, sc, id, n)
		if err != nil {
			return err
		}
		cur, st, err := s.loadForChange(ctx, sc, id)
		if err != nil {
			return err
		}
		limits, err := s.Limits(ctx, sc)
		if err != nil {
			return err
		}
		if !limits.AllowsContentType(src.ContentType) {
			return unsupportedType(src.ContentType)
		}
		head, err := s.head(ctx, sc.ID, src)
		if err != nil {
			return err
		}
		view := documentHookView{ProjectID: cur.ProjectID, Title: cur.Title, Metadata: cur.Metadata, Filename: src.Filename,
			ContentType: src.ContentType, Size: &src.Size, FirstBytes: base64.StdEncoding.EncodeToString(head), RestoredFrom: n}
		if err := s.Hooks.validate(ctx, sc, ValidationRequest{Hook: HookDocumentValidate, Operation: OpRestore, Input: view,
			Current: cur, Project: st.context()}); err != nil {
			return err
		}
		version, _, err := s.reserve(ctx, sc, actor, id, false, src.Size, true, limits)
		if err != nil {
			return err
		}
		dst := storage.DocumentKey(sc.ID, id, version)
		if err := s.copyBlob(ctx, storage.DocumentKey(sc.ID, id, n), dst, src); err != nil {
			s.discard(ctx, sc, id, version, true)
			return err
		}
		ver := &DocumentVersion{DocumentID: id, Version: version, Size: src.Size, SHA256: src.SHA256, MD5: src.MD5,
			ContentType: src.ContentType, Filename: src.Filename, RestoredFrom: &n}
		doc, err = s.commitExisting(ctx, sc, actor, id, ver, "document.restore", cur)
		return err
	})
	if err != nil {
		return nil, err
	}
	return doc, nil
}

func (s *DocumentService) head(ctx context.Context, tenantID uuid.UUID, v *DocumentVersion) ([]byte, error) {
	if v.Size == 0 {
		return nil, nil
	}
	r, err := s.Open(ctx, tenantID, v, 0, min(v.Size, HookFirstBytes))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, HookFirstBytes))
	if err != nil {
		return nil, fmt.Errorf("read document head: %w", err)
	}
	return b, nil
}

// copyBlob copies src to the reserved key dst inside the bucket and checks
// what arrived.
func (s *DocumentService) copyBlob(ctx context.Context, srcKey, dstKey string, src *DocumentVersion) error {
	if err := s.clearReservedKey(ctx, dstKey); err != nil {
		return err
	}
	if err := s.Bucket.Copy(ctx, dstKey, srcKey, nil); err != nil {
		return fmt.Errorf("copy %s to %s: %w", srcKey, dstKey, err)
	}
	a, err := storage.Stat(ctx, s.Bucket, dstKey)
	if err == nil && a.Size != src.Size {
		err = fmt.Errorf("copy %s: %w: %d bytes, want %d", dstKey, storage.ErrIntegrity, a.Size, src.Size)
	}
	if err == nil && len(a.MD5) > 0 && src.MD5 != "" && fmt.Sprintf("%x", a.MD5) != src.MD5 {
		err = fmt.Errorf("copy %s: %w: md5 %x, want %s", dstKey, storage.ErrIntegrity, a.MD5, src.MD5)
	}
	return err
}

// clearReservedKey deletes a leftover object at a key whose version number
// this upload holds: no committed version has that number, so anything
// there is what a failed earlier attempt could not delete.
func (s *DocumentService) clearReservedKey(ctx context.Context, key string) error {
	if err := storage.Delete(ctx, s.Bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("clear reserved key: %w", err)
	}
	return nil
}

type documentHookView struct {
	ProjectID    uuid.UUID `json:"project_id"`
	Title        string    `json:"title"`
	Metadata     RawJSON   `json:"metadata"`
	Filename     string    `json:"filename,omitempty"`
	ContentType  string    `json:"content_type,omitempty"`
	Size         *int64    `json:"size,omitempty"`
	FirstBytes   string    `json:"first_bytes_base64"`
	RestoredFrom int       `json:"restored_from,omitempty"`
}

// storeUpload reserves a version number and quota, streams the body into
// the bucket (checking the allowlist and the validation hook before the
// first byte is written), and runs in.Finish. It returns the version to
// commit; on error the reservation and any blob are gone.
func (s *DocumentService) storeUpload(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, newDoc bool,
	in Upload, view documentHookView, req ValidationRequest) (*DocumentVersion, error) {
	limits, err := s.Limits(ctx, sc)
	if err != nil {
		return nil, err
	}
	declared := in.DeclaredBytes
	if declared < 0 {
		declared = -1
	}
	version, reserved, err := s.reserve(ctx, sc, actor, id, newDoc, declared, false, limits)
	if err != nil {
		return nil, err
	}
	key := storage.DocumentKey(sc.ID, id, version)
	fail := func(err error) (*DocumentVersion, error) {
		s.discard(ctx, sc, id, version, true)
		return nil, err
	}
	if !newDoc {
		if err := s.clearReservedKey(ctx, key); err != nil {
			return fail(err)
		}
	}

	body := &clientBody{r: in.Body}
	br := bufio.NewReaderSize(body, HookFirstBytes)
	peek, perr := br.Peek(HookFirstBytes)
	if perr != nil && perr != io.EOF && perr != bufio.ErrBufferFull {
		return fail(bodyErr(perr))
	}
	first := append([]byte(nil), peek...)
	var size *int64
	if len(first) < HookFirstBytes {
		n := int64(len(first))
		size = &n
	}
	res, err := storage.Put(ctx, s.Bucket, key, br, &storage.PutOptions{
		MaxBytes:    max(reserved, 1), // 0 would mean storage's default
		ContentType: in.ContentType,
		Inspect: func(_ []byte, contentType string) error {
			if !limits.AllowsContentType(contentType) {
				return unsupportedType(contentType)
			}
			view.ContentType, view.Size = contentType, size
			view.FirstBytes = base64.StdEncoding.EncodeToString(first)
			// Between the reservation's and the commit's transactions:
			// no transaction is open and no connection held here.
			req.Hook, req.Input = HookDocumentValidate, view
			return s.Hooks.validate(ctx, sc, req)
		},
	})
	if err != nil {
		var ce *Error
		switch {
		case errors.As(err, &ce):
			return fail(err)
		case errors.Is(err, storage.ErrTooLarge):
			if reserved < limits.MaxFileBytes {
				return fail(&Error{Code: EQUOTA, Message: fmt.Sprintf("the upload exceeds the %d bytes left of the tenant's storage quota", reserved)})
			}
			return fail(&Error{Code: ETOOLARGE, Message: fmt.Sprintf("the file exceeds the limit of %d bytes", limits.MaxFileBytes)})
		case body.err != nil:
			return fail(bodyErr(body.err))
		}
		return fail(fmt.Errorf("store document: %w", err))
	}
	if in.Finish != nil {
		if err := in.Finish(); err != nil {
			s.deleteBlob(ctx, key)
			return fail(err)
		}
	}
	return &DocumentVersion{DocumentID: id, Version: version, Size: res.Size, SHA256: res.SHA256, MD5: res.MD5,
		ContentType: res.ContentType, CreatedBy: actor.UserID}, nil
}

func unsupportedType(ct string) error {
	return &Error{Code: EUNSUPPORTED, Message: fmt.Sprintf("content type %s is not allowed in this tenant", ct)}
}

func bodyErr(err error) error {
	return &Error{Code: EINVALID, Message: "the upload ended early or is malformed", Err: err}
}

// clientBody remembers the first error of the client's body, to tell a
// client that went away from a bucket that failed.
type clientBody struct {
	r   io.Reader
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// reserve takes the next version number of a document (1 for a new one)
// and reserves quota for the upload, in one transaction under a per-tenant
// lock, so concurrent uploads neither share a number nor overrun the quota.
// With a declared size it reserves min(declared, max file size) and refuses
// if that does not fit; without, it reserves what is left, up to the max
// file size. exact marks a size known exactly (restore): it must fit.
func (s *DocumentService) reserve(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, newDoc bool,
	declared int64, exact bool, limits tenant.StorageSettings) (version int, reserved int64, err error) {
	err = sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", "documents.quota:"+sc.Schema).Error; err != nil {
			return err
		}
		version = 1
		if !newDoc {
			var next []int
			if err := tx.Raw("SELECT next_version FROM "+sc.Table("documents")+" WHERE id = ? AND deleted_at IS NULL FOR UPDATE", id).Scan(&next).Error; err != nil {
				return err
			}
			if len(next) == 0 {
				return errDocNotFound
			}
			version = next[0]
		}
		used, err := usage(tx, sc)
		if err != nil {
			return err
		}
		left := limits.QuotaBytes - used
		switch {
		case exact && declared > left:
			return quotaErr(declared, left)
		case exact:
			reserved = declared
		case declared >= 0:
			reserved = min(declared, limits.MaxFileBytes)
			if reserved > left {
				return quotaErr(reserved, left)
			}
		default:
			if left <= 0 {
				return quotaErr(1, left)
			}
			reserved = min(left, limits.MaxFileBytes)
		}
		if !newDoc {
			if err := tx.Exec("UPDATE "+sc.Table("documents")+" SET next_version = next_version + 1 WHERE id = ?", id).Error; err != nil {
				return err
			}
		}
		return tx.Exec("INSERT INTO "+sc.Table("document_uploads")+" (document_id, version, reserved_bytes, created_by, expires_at) VALUES (?, ?, ?, ?, ?)",
			id, version, reserved, actor.UserID, time.Now().Add(s.ReservationTTL())).Error
	})
	if err != nil {
		return 0, 0, commitErr("reserve upload", err)
	}
	return version, reserved, nil
}

func quotaErr(need, left int64) error {
	return &Error{Code: EQUOTA, Message: fmt.Sprintf("the tenant's storage quota is exhausted: the upload needs up to %d bytes, %d are left", need, max(left, 0))}
}

// commitExisting records a stored version of an existing document. seen is
// the document as its document.validate hook saw it: if its title or
// metadata changed since, nothing is committed and the error is errStale.
func (s *DocumentService) commitExisting(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, ver *DocumentVersion, action string, seen *Document) (*Document, error) {
	var doc *Document
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		var rows []documentRow
		// Lock the row: a delete racing the upload either ran before (the
		// upload fails) or waits until the version is in.
		err := tx.Raw(`UPDATE `+sc.Table("documents")+` SET current_version = greatest(current_version, ?), version = version + 1,
			updated_at = now() WHERE id = ? AND deleted_at IS NULL
			RETURNING id, project_id, title, metadata::text AS metadata, (metadata = ?::jsonb) AS same_metadata,
			version AS row_version, created_by, created_at, updated_at`,
			ver.Version, id, string(seen.Metadata)).Scan(&rows).Error
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return errDocNotFound
		}
		if rows[0].Title != seen.Title || !rows[0].SameMetadata {
			return errStale // rolls the UPDATE back
		}
		doc = rows[0].document()
		return s.commitVersion(tx, sc, actor, doc, ver, action)
	})
	if err != nil {
		s.discard(ctx, sc, id, ver.Version, true)
		return nil, commitErr("commit document version", err)
	}
	return doc, nil
}

// commitVersion inserts the version row, drops its reservation, and writes
// the audit row and the document.uploaded event, in tx. It completes doc
// with the version.
func (s *DocumentService) commitVersion(tx *gorm.DB, sc tenant.Scope, actor Actor, doc *Document, ver *DocumentVersion, action string) error {
	ver.CreatedBy = actor.UserID
	ver.CreatedAt = time.Now().UTC()
	if err := tx.Table(sc.Table("document_versions")).Create(ver).Error; err != nil {
		return err
	}
	if err := tx.Exec("DELETE FROM "+sc.Table("document_uploads")+" WHERE document_id = ? AND version = ?", ver.DocumentID, ver.Version).Error; err != nil {
		return err
	}
	doc.Version, doc.Size, doc.SHA256, doc.ContentType, doc.Filename = ver.Version, ver.Size, ver.SHA256, ver.ContentType, ver.Filename
	details := map[string]any{"version": ver.Version, "size": ver.Size, "sha256": ver.SHA256, "content_type": ver.ContentType}
	if ver.RestoredFrom != nil {
		details["restored_from"] = *ver.RestoredFrom
	}
	if err := RecordAudit(tx, sc, actor, action, "document", doc.ID.String(), OutcomeSuccess, details); err != nil {
		return err
	}
	return s.Events.emit(tx, sc, actor, EventDocumentUploaded, doc.ID.String(), map[string]any{
		"document_id": doc.ID, "project_id": doc.ProjectID, "title": doc.Title, "version": ver.Version,
		"size": ver.Size, "sha256": ver.SHA256, "content_type": ver.ContentType, "filename": ver.Filename,
		"restored_from": ver.RestoredFrom,
	})
}

func commitErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// discard undoes an upload that will not commit: it deletes the blob (if
// blob) and the reservation, and gives the version number back when no later
// one was taken, so a failed upload leaves no gap in the numbering. It runs
// on its own deadline: ctx may be what failed.
func (s *DocumentService) discard(ctx context.Context, sc tenant.Scope, id uuid.UUID, version int, blob bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if blob {
		s.deleteBlob(ctx, storage.DocumentKey(sc.ID, id, version))
	}
	if err := s.release(ctx, sc, id, version); err != nil {
		slog.ErrorContext(ctx, "release upload reservation (the collector retries)", "tenant", sc.ID, "document", id, "version", version, "err", err)
	}
}

func (s *DocumentService) deleteBlob(ctx context.Context, key string) {
	if err := storage.Delete(ctx, s.Bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		slog.ErrorContext(ctx, "delete blob of a failed upload (the collector retries)", "key", key, "err", err)
	}
}

func (s *DocumentService) release(ctx context.Context, sc tenant.Scope, id uuid.UUID, version int) error {
	return sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		res := tx.Exec("DELETE FROM "+sc.Table("document_uploads")+" WHERE document_id = ? AND version = ?", id, version)
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error
		}
		return tx.Exec("UPDATE "+sc.Table("documents")+" SET next_version = ? WHERE id = ? AND next_version = ?", version, id, version+1).Error
	})
}

// ---- edits ----

// Update edits title and metadata if the document is still at row version
// ifMatch. The document.validate hook runs before the transaction on the
// document and project as loaded; the transaction writes only if the
// document is still at that version (else EPRECONDITION) and runs the cycle
// again if the project changed. It returns ENOTFOUND, EPRECONDITION,
// EINVALID, EPLUGINREJECTED or ECONFLICT.
func (s *DocumentService) Update(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID, ifMatch int64, u DocumentUpdate) (*Document, error) {
	changed := map[string]any{}
	if u.Title != nil {
		t, err := validateTitle(*u.Title)
		if err != nil {
			return nil, err
		}
		u.Title = &t
		changed["title"] = t
	}
	if u.Metadata != nil {
		m, err := ValidateMetadata([]byte(*u.Metadata))
		if err != nil {
			return nil, err
		}
		u.Metadata = &m
	}
	stale := &Error{Code: EPRECONDITION, Message: "the document has changed since you read it (ETag mismatch)"}
	var out *Document
	err := retryStale("the project", func() error {
		before, st, err := s.loadForChange(ctx, sc, id)
		if err != nil {
			return err
		}
		if before.RowVersion != ifMatch {
			return stale
		}
		after := *before
		if u.Title != nil {
			after.Title = *u.Title
		}
		if u.Metadata != nil {
			after.Metadata = *u.Metadata
		}
		if after.Title == before.Title && after.Metadata == before.Metadata {
			out = before
			return nil
		}
		view := documentHookView{ProjectID: after.ProjectID, Title: after.Title, Metadata: after.Metadata, Filename: after.Filename,
			ContentType: after.ContentType, Size: &after.Size}
		if err := s.Hooks.validate(ctx, sc, ValidationRequest{Hook: HookDocumentValidate, Operation: OpUpdate, Input: view,
			Current: before, Project: st.context()}); err != nil {
			return err
		}
		return sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
			var stamp []struct {
				Version   int64     `gorm:"column:version"`
				UpdatedAt time.Time `gorm:"column:updated_at"`
			}
			if err := tx.Raw("SELECT version, updated_at FROM "+sc.Table("documents")+" WHERE id = ? AND deleted_at IS NULL FOR UPDATE", id).Scan(&stamp).Error; err != nil {
				return err
			}
			if len(stamp) == 0 {
				return errDocNotFound
			}
			if stamp[0].Version != ifMatch {
				return stale
			}
			p, err := liveProject(tx, sc, before.ProjectID, "SHARE")
			if ErrorCode(err) == ENOTFOUND {
				return errDocNotFound
			} else if err != nil {
				return err
			}
			if p.Version != st.row.Version {
				return errStale
			}
			if err := tx.Raw("UPDATE "+sc.Table("documents")+" SET title = ?, metadata = ?::jsonb, version = version + 1, updated_at = now() WHERE id = ? RETURNING version, updated_at",
				after.Title, string(after.Metadata), id).Scan(&stamp).Error; err != nil {
				return err
			}
			after.RowVersion = stamp[0].Version
			after.ETag = ETag(after.RowVersion)
			after.UpdatedAt = stamp[0].UpdatedAt.UTC()
			out = &after
			if u.Metadata != nil && after.Metadata != before.Metadata {
				changed["metadata"] = true
			}
			return RecordAudit(tx, sc, actor, "document.update", "document", id.String(), OutcomeSuccess, changed)
		})
	})
	if err != nil {
		return nil, commitErr("update document", err)
	}
	return out, nil
}

// Delete soft-deletes a document: it disappears at once, its blobs are
// purged by the collector after DeleteGrace. It returns ENOTFOUND.
func (s *DocumentService) Delete(ctx context.Context, sc tenant.Scope, actor Actor, id uuid.UUID) error {
	err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
		res := tx.Exec("UPDATE "+sc.Table("documents")+` SET deleted_at = now(), purge_after = now() + make_interval(secs => ?),
			version = version + 1, updated_at = now() WHERE id = ? AND deleted_at IS NULL`, s.deleteGrace().Seconds(), id)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return errDocNotFound
		}
		return RecordAudit(tx, sc, actor, "document.delete", "document", id.String(), OutcomeSuccess, nil)
	})
	return commitErr("delete document", err)
}

// ---- garbage collection ----

// GCStats counts what one collection removed.
type GCStats struct {
	PurgedDocuments     int
	ExpiredReservations int
	OrphanBlobs         int
}

// Collect removes, in one tenant: the blobs and rows of documents deleted
// more than DeleteGrace ago; reservations of uploads that crashed (with
// their blobs); and blobs older than minAge that no version or reservation
// accounts for (a commit that failed after its blob was stored, a delete
// that failed, temporary files of crashed uploads on file buckets). minAge
// must exceed ReservationTTL so a live upload is never mistaken for an
// orphan. Running it twice at once is harmless: every step is idempotent.
func (s *DocumentService) Collect(ctx context.Context, sc tenant.Scope, minAge time.Duration) (GCStats, error) {
	var st GCStats
	// 1. Deleted documents past their grace period.
	var purge []uuid.UUID
	if err := s.DB.WithContext(ctx).Raw("SELECT id FROM " + sc.Table("documents") + " WHERE deleted_at IS NOT NULL AND purge_after < now() ORDER BY purge_after LIMIT 500").Scan(&purge).Error; err != nil {
		return st, fmt.Errorf("collect documents: %w", err)
	}
	for _, id := range purge {
		if _, err := storage.DeletePrefix(ctx, s.Bucket, storage.DocumentPrefix(sc.ID, id)); err != nil {
			return st, fmt.Errorf("purge document %s: %w", id, err)
		}
		err := sc.Tx(ctx, s.DB, func(tx *gorm.DB) error {
			if err := tx.Exec("DELETE FROM "+sc.Table("document_uploads")+" WHERE document_id = ?", id).Error; err != nil {
				return err
			}
			return tx.Exec("DELETE FROM "+sc.Table("documents")+" WHERE id = ? AND deleted_at IS NOT NULL", id).Error
		})
		if err != nil {
			return st, fmt.Errorf("purge document %s: %w", id, err)
		}
		st.PurgedDocuments++
	}
	// 2. Reservations of crashed uploads.
	type upload struct {
		DocumentID uuid.UUID `gorm:"column:document_id"`
		Version    int       `gorm:"column:version"`
	}
	var expired []upload
	if err := s.DB.WithContext(ctx).Raw("SELECT document_id, version FROM " + sc.Table("document_uploads") + " WHERE expires_at < now() LIMIT 500").Scan(&expired).Error; err != nil {
		return st, fmt.Errorf("collect uploads: %w", err)
	}
	for _, u := range expired {
		key := storage.DocumentKey(sc.ID, u.DocumentID, u.Version)
		if err := storage.Delete(ctx, s.Bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return st, err
		}
		if err := s.release(ctx, sc, u.DocumentID, u.Version); err != nil {
			return st, fmt.Errorf("release upload: %w", err)
		}
		st.ExpiredReservations++
	}
	// 3. Orphan blobs.
	cutoff := time.Now().Add(-minAge)
	err := storage.ListPrefix(ctx, s.Bucket, storage.TenantPrefix(sc.ID), func(key string, _ int64, mod time.Time) error {
		if mod.After(cutoff) {
			return nil // possibly an upload in flight
		}
		tid, docID, version, err := storage.ParseDocumentKey(key)
		if err != nil {
			if strings.HasSuffix(path.Base(key), ".tmp") { // file bucket: a crashed upload's temporary file
				if err := storage.Delete(ctx, s.Bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
				st.OrphanBlobs++
			}
			return nil
		}
		if tid != sc.ID {
			return nil
		}
		var known bool
		if err := s.DB.WithContext(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM `+sc.Table("document_versions")+` WHERE document_id = @d AND version = @v)
			OR EXISTS (SELECT 1 FROM `+sc.Table("document_uploads")+` WHERE document_id = @d AND version = @v)`,
			map[string]any{"d": docID, "v": version}).Scan(&known).Error; err != nil {
			return err
		}
		if known {
			return nil
		}
		if err := storage.Delete(ctx, s.Bucket, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		st.OrphanBlobs++
		return nil
	})
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return st, fmt.Errorf("collect orphan blobs: %w", err)
	}
	return st, nil
}
