package api

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// Limits of the non-file parts of an upload.
const (
	maxTitlePart    = 1 << 10
	maxMetadataPart = 4 * core.MaxMetadataBytes // whitespace allowance; compacted it must fit MaxMetadataBytes
)

func (s *Server) documents() (*core.DocumentService, error) {
	if s.d.Documents.Service == nil {
		return nil, errf(core.EUNAVAILABLE, "document storage is not configured")
	}
	return s.d.Documents.Service, nil
}

func (s *Server) transferTimeout() time.Duration {
	if s.d.Documents.TransferTimeout > 0 {
		return s.d.Documents.TransferTimeout
	}
	return time.Hour
}

// transferContext outlives the request context's 30 s (an upload or
// download of a large file takes longer) and the handler: a download is
// streamed after the handler returned. The caller cancels it.
func (s *Server) transferContext(c *fiber.Ctx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(c.UserContext()), s.transferTimeout())
}

// uploadForm reads a multipart/form-data body part by part, straight from
// the socket: the file part is handed on as a stream and never buffered.
type uploadForm struct {
	mr   *multipart.Reader
	size int64 // Content-Length, -1 if chunked
}

func openUploadForm(c *fiber.Ctx) (*uploadForm, error) {
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, errf(core.EUNSUPPORTED, "the body must be multipart/form-data with a file part named \"file\"")
	}
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && enc != "identity" {
		return nil, errf(core.EUNSUPPORTED, "compressed request bodies (Content-Encoding) are not accepted")
	}
	body, ok := requestBody(c)
	if !ok {
		return nil, errors.New("upload route without a streamed body")
	}
	size := int64(c.Request().Header.ContentLength())
	if size < 0 {
		size = -1
	}
	return &uploadForm{mr: multipart.NewReader(body, params["boundary"]), size: size}, nil
}

// next reads up to the file part. fields names the text parts allowed
// before it; each may appear once. Parts after the file are refused by
// finish.
func (f *uploadForm) next(fields map[string]int) (map[string]string, *multipart.Part, error) {
	vals := map[string]string{}
	for {
		p, err := f.mr.NextPart()
		if err == io.EOF {
			return nil, nil, core.Invalid(core.FieldError{Field: "file", Message: "a part named \"file\" is required"})
		}
		if err != nil {
			return nil, nil, core.Invalid(core.FieldError{Field: "body", Message: "malformed multipart body"})
		}
		name := p.FormName()
		if name == "file" {
			return vals, p, nil
		}
		limit, ok := fields[name]
		if !ok {
			return nil, nil, core.Invalid(core.FieldError{Field: name, Message: "unknown part (allowed: " + allowedParts(fields) + ", then file)"})
		}
		if _, dup := vals[name]; dup {
			return nil, nil, core.Invalid(core.FieldError{Field: name, Message: "given twice"})
		}
		b, err := io.ReadAll(io.LimitReader(p, int64(limit)+1))
		if err != nil {
			return nil, nil, core.Invalid(core.FieldError{Field: "body", Message: "malformed multipart body"})
		}
		if len(b) > limit {
			return nil, nil, core.Invalid(core.FieldError{Field: name, Message: "must be at most " + strconv.Itoa(limit) + " bytes"})
		}
		vals[name] = string(b)
	}
}

func allowedParts(fields map[string]int) string {
	var names []string
	for _, n := range []string{"title", "metadata"} {
		if _, ok := fields[n]; ok {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// finish checks, after the file part, that the body ends there: a field
// sent after the file would arrive too late for validation.
func (f *uploadForm) finish() error {
	p, err := f.mr.NextPart()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return core.Invalid(core.FieldError{Field: "body", Message: "malformed multipart body"})
	}
	return core.Invalid(core.FieldError{Field: p.FormName(), Message: "the file part must be the last part"})
}

func (f *uploadForm) upload(part *multipart.Part) core.Upload {
	return core.Upload{
		Filename:      part.FileName(),
		ContentType:   part.Header.Get("Content-Type"),
		Body:          part,
		DeclaredBytes: f.size,
		Finish:        f.finish,
	}
}

func (s *Server) createDocument(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	projectID, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	form, err := openUploadForm(c)
	if err != nil {
		return err
	}
	vals, part, err := form.next(map[string]int{"title": maxTitlePart, "metadata": maxMetadataPart})
	if err != nil {
		return err
	}
	in := form.upload(part)
	in.Title, in.Metadata = vals["title"], core.RawJSON(vals["metadata"])
	ctx, cancel := s.transferContext(c)
	defer cancel()
	t := currentTenant(c)
	doc, err := svc.Create(ctx, t.Scope(), actor(c), projectID, in)
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + t.Slug + "/documents/" + doc.ID.String())
	c.Set(fiber.HeaderETag, doc.ETag)
	return c.Status(fiber.StatusCreated).JSON(doc)
}

func (s *Server) addDocumentVersion(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	form, err := openUploadForm(c)
	if err != nil {
		return err
	}
	_, part, err := form.next(nil)
	if err != nil {
		return err
	}
	ctx, cancel := s.transferContext(c)
	defer cancel()
	t := currentTenant(c)
	doc, err := svc.AddVersion(ctx, t.Scope(), actor(c), id, form.upload(part))
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + t.Slug + "/documents/" + id.String() + "/content?version=" + strconv.Itoa(doc.Version))
	c.Set(fiber.HeaderETag, doc.ETag)
	return c.Status(fiber.StatusCreated).JSON(doc)
}

func (s *Server) restoreDocumentVersion(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(c.Params("n"))
	if err != nil || n < 1 {
		return errf(core.ENOTFOUND, "version not found")
	}
	ctx, cancel := s.transferContext(c)
	defer cancel()
	t := currentTenant(c)
	doc, err := svc.Restore(ctx, t.Scope(), actor(c), id, n)
	if err != nil {
		return err
	}
	c.Location("/v1/tenants/" + t.Slug + "/documents/" + id.String() + "/content?version=" + strconv.Itoa(doc.Version))
	c.Set(fiber.HeaderETag, doc.ETag)
	return c.Status(fiber.StatusCreated).JSON(doc)
}

func (s *Server) listDocuments(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	projectID, err := pathUUID(c, "id", "project")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	page, err := svc.List(c.UserContext(), currentTenant(c).Scope(), projectID, limit, c.Query("cursor"))
	if err != nil {
		return err
	}
	return c.JSON(page)
}

func (s *Server) getDocument(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	doc, err := svc.Get(c.UserContext(), currentTenant(c).Scope(), id)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, doc.ETag)
	return c.JSON(doc)
}

func (s *Server) patchDocument(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	version, err := ifMatch(c)
	if err != nil {
		return err
	}
	m, err := decodeObject(c, "title", "metadata")
	if err != nil {
		return err
	}
	var u core.DocumentUpdate
	var errs []core.FieldError
	var title string
	if field(m, "title", &title, &errs) {
		u.Title = &title
	}
	if raw, ok := m["metadata"]; ok {
		meta := core.RawJSON(raw)
		u.Metadata = &meta
	}
	if err := fieldsErr(errs); err != nil {
		return err
	}
	doc, err := svc.Update(c.UserContext(), currentTenant(c).Scope(), actor(c), id, version, u)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, doc.ETag)
	return c.JSON(doc)
}

func (s *Server) deleteDocument(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	if err := svc.Delete(c.UserContext(), currentTenant(c).Scope(), actor(c), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) listDocumentVersions(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	page, err := svc.Versions(c.UserContext(), currentTenant(c).Scope(), id, limit, c.Query("cursor"))
	if err != nil {
		return err
	}
	return c.JSON(page)
}

// queryVersion reads ?version=N (0 when absent: the current version).
func queryVersion(c *fiber.Ctx) (int, error) {
	v := c.Query("version")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, core.Invalid(core.FieldError{Field: "version", Message: "must be a version number (1, 2, ...)"})
	}
	return n, nil
}

func (s *Server) documentContent(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	n, err := queryVersion(c)
	if err != nil {
		return err
	}
	t := currentTenant(c)
	v, err := svc.Version(c.UserContext(), t.Scope(), id, n)
	if err != nil {
		return err
	}
	return s.sendContent(c, svc, t.ID, v)
}

func (s *Server) documentURL(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	id, err := pathUUID(c, "doc", "document")
	if err != nil {
		return err
	}
	n, err := queryVersion(c)
	if err != nil {
		return err
	}
	expiry := s.d.Documents.URLExpiry
	if expiry <= 0 {
		expiry = 15 * time.Minute
	}
	if v := c.Query("expires_in"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 60 || secs > 86400 {
			return core.Invalid(core.FieldError{Field: "expires_in", Message: "must be 60 to 86400 seconds"})
		}
		expiry = time.Duration(secs) * time.Second
	}
	var fallback *storage.Signer
	if len(s.d.Documents.SecretKey) > 0 {
		// The URL points at the origin the client used to reach us.
		if fallback, err = storage.NewSigner(s.d.Documents.SecretKey, c.BaseURL()); err != nil {
			return err
		}
	}
	expires := time.Now().Add(expiry).UTC().Truncate(time.Second)
	u, v, err := svc.SignedURL(c.UserContext(), currentTenant(c).Scope(), id, n, expiry, fallback)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"url": u, "method": "GET", "expires_at": expires, "version": v.Version,
		"size": v.Size, "sha256": v.SHA256, "content_type": v.ContentType})
}

// storageView is a tenant's document storage use and limits.
type storageView struct {
	UsedBytes           int64    `json:"used_bytes"`
	QuotaBytes          int64    `json:"quota_bytes"`
	MaxFileBytes        int64    `json:"max_file_bytes"`
	AllowedContentTypes []string `json:"allowed_content_types"`
}

func (s *Server) tenantStorage(ctx context.Context, t *tenant.Tenant) (*storageView, error) {
	svc := s.d.Documents.Service
	if svc == nil || t.SchemaVersion < core.DocumentsSchemaVersion {
		return nil, nil // not migrated yet: no document tables
	}
	limits, err := svc.Limits(ctx, t.Scope())
	if err != nil {
		return nil, err
	}
	used, err := svc.Usage(ctx, t.Scope())
	if err != nil {
		return nil, err
	}
	types := limits.AllowedContentTypes
	if types == nil {
		types = []string{}
	}
	return &storageView{UsedBytes: used, QuotaBytes: limits.QuotaBytes, MaxFileBytes: limits.MaxFileBytes, AllowedContentTypes: types}, nil
}
