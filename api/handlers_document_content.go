package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/storage"
	"github.com/promanage/promanage/tenant"
)

// sendContent streams a version's bytes: the whole or one byte range
// (206), with Content-Length, Content-Type, ETag (the sha256) and a safe
// Content-Disposition. The body is read from the bucket while it is
// written to the socket, after the handler returned.
func (s *Server) sendContent(c *fiber.Ctx, svc *core.DocumentService, tenantID uuid.UUID, v *core.DocumentVersion) error {
	etag := `"` + v.SHA256 + `"`
	c.Set(fiber.HeaderETag, etag)
	c.Set(fiber.HeaderAcceptRanges, "bytes")
	c.Set(fiber.HeaderCacheControl, "private, no-cache")
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	// Never rendered as a page of our origin, even if a browser insists.
	c.Set(fiber.HeaderContentSecurityPolicy, "sandbox")
	c.Set(fiber.HeaderContentDisposition, contentDisposition(v.Filename, v.DocumentID.String(), v.Version))
	if etagMatches(c.Get(fiber.HeaderIfNoneMatch), etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	offset, length, partial := int64(0), v.Size, false
	if h := c.Get(fiber.HeaderRange); h != "" && ifRangeHolds(c.Get(fiber.HeaderIfRange), etag) {
		off, n, ok, satisfiable := parseRange(h, v.Size)
		if !satisfiable {
			return rangeNotSatisfiable(c, v.Size)
		}
		if ok {
			offset, length, partial = off, n, true
		}
	}
	c.Set(fiber.HeaderContentType, v.ContentType)
	status := fiber.StatusOK
	if partial {
		status = fiber.StatusPartialContent
		c.Set(fiber.HeaderContentRange, fmt.Sprintf("bytes %d-%d/%d", offset, offset+length-1, v.Size))
	}
	c.Status(status)
	if length == 0 {
		return c.Send(nil)
	}
	ctx, cancel := s.transferContext(c)
	r, err := svc.Open(ctx, tenantID, v, offset, length)
	if err != nil {
		cancel()
		return err
	}
	body := &downloadBody{r: r, cancel: cancel, want: length, conn: c.Context().Conn(), idle: s.o.WriteTimeout,
		what: fmt.Sprintf("%s v%d", v.DocumentID, v.Version)}
	// fasthttp writes exactly length bytes or fails the connection: a
	// client never takes a short body for the whole.
	c.Context().SetBodyStream(body, int(length))
	// SetBodyStream resets the content type to fasthttp's default.
	c.Set(fiber.HeaderContentType, v.ContentType)
	return nil
}

// rangeNotSatisfiable answers 416 itself: the code -> status table has no
// entry for it, since no service returns it.
func rangeNotSatisfiable(c *fiber.Ctx, size int64) error {
	c.Set(fiber.HeaderContentRange, "bytes */"+strconv.FormatInt(size, 10))
	p := problem{Type: "https://promanage.dev/problems/range_not_satisfiable", Title: "Requested Range Not Satisfiable",
		Status: fiber.StatusRequestedRangeNotSatisfiable, Code: "range_not_satisfiable",
		Detail: fmt.Sprintf("the range is outside the %d bytes of the content", size), RequestID: requestID(c)}
	b, _ := jsonMarshal(p)
	c.Status(p.Status)
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Send(b)
}

// downloadBody is a blob reader handed to fasthttp. It keeps the
// connection's write deadline moving while bytes flow, reports a blob that
// ends before its recorded size as an error (never a silent short body),
// and releases the reader and its context on Close.
type downloadBody struct {
	r        io.ReadCloser
	cancel   context.CancelFunc
	want     int64
	got      int64
	conn     net.Conn
	idle     time.Duration
	extended time.Time
	what     string
}

func (b *downloadBody) Read(p []byte) (int, error) {
	if b.idle > 0 && b.conn != nil {
		if now := time.Now(); now.Sub(b.extended) > 100*time.Millisecond {
			_ = b.conn.SetWriteDeadline(now.Add(b.idle))
			b.extended = now
		}
	}
	if rest := b.want - b.got; int64(len(p)) > rest {
		p = p[:rest]
	}
	if len(p) == 0 {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.got += int64(n)
	if err == io.EOF && b.got < b.want {
		slog.Error("document download truncated: the bucket returned fewer bytes than stored", "document", b.what, "got", b.got, "want", b.want)
		return n, io.ErrUnexpectedEOF
	}
	if err == nil && b.got == b.want {
		err = io.EOF
	}
	return n, err
}

func (b *downloadBody) Close() error {
	err := b.r.Close()
	b.cancel()
	if b.got < b.want {
		slog.Warn("document download ended early", "document", b.what, "sent", b.got, "want", b.want)
	}
	return err
}

// parseRange parses a single byte range of a Range header against size.
// ok is false for a header to ignore (not bytes=, malformed, several
// ranges: the whole content is sent, as RFC 9110 allows); satisfiable is
// false for a well-formed range outside the content (416).
func parseRange(h string, size int64) (offset, length int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, true
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, true
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, true
		}
		if n == 0 || size == 0 {
			return 0, 0, false, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, true
	}
	end := size - 1
	if last != "" {
		if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
			return 0, 0, false, true
		}
		end = min(end, size-1)
	}
	if start >= size {
		return 0, 0, false, false
	}
	return start, end - start + 1, true, true
}

// ifRangeHolds: without If-Range a Range applies; with it, only if it
// names the current entity tag (dates are not validators here).
func ifRangeHolds(ifRange, etag string) bool {
	return ifRange == "" || strings.TrimSpace(ifRange) == etag
}

func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// contentDisposition makes an attachment header from a client-supplied
// file name: an ASCII fallback with anything risky replaced, and the exact
// name in RFC 8187 encoding.
func contentDisposition(filename, docID string, version int) string {
	if filename == "" {
		filename = "document-" + docID + "-v" + strconv.Itoa(version)
	}
	var ascii strings.Builder
	for _, r := range filename {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' || r == '%' || r == ';' {
			ascii.WriteByte('_')
		} else {
			ascii.WriteRune(r)
		}
	}
	return `attachment; filename="` + ascii.String() + `"; filename*=UTF-8''` + url.PathEscape(filename)
}

// serveBlob serves a URL made by a storage.Signer (buckets that cannot sign
// their own URLs). The signature authorizes the request; the document must
// still exist, in a live tenant.
func (s *Server) serveBlob(c *fiber.Ctx) error {
	svc, err := s.documents()
	if err != nil {
		return err
	}
	if len(s.d.Documents.SecretKey) == 0 {
		return errf(core.ENOTFOUND, "not found")
	}
	signer, err := storage.NewSigner(s.d.Documents.SecretKey, "http://verify.invalid")
	if err != nil {
		return err
	}
	q, err := url.ParseQuery(string(c.Request().URI().QueryString()))
	if err != nil {
		return errf(core.EFORBIDDEN, "the link is invalid")
	}
	key, err := signer.Verify(q, time.Now())
	switch {
	case errors.Is(err, storage.ErrExpired):
		return errf(core.EFORBIDDEN, "the link has expired")
	case err != nil:
		return errf(core.EFORBIDDEN, "the link is invalid")
	}
	tenantID, docID, version, err := storage.ParseDocumentKey(key)
	if err != nil {
		return errf(core.ENOTFOUND, "not found")
	}
	t, err := s.d.Registry.ByID(c.UserContext(), tenantID)
	if errors.Is(err, tenant.ErrNotFound) || (err == nil && t.State != tenant.StateActive && t.State != tenant.StateSuspended) {
		return errf(core.ENOTFOUND, "not found")
	} else if err != nil {
		return err
	}
	if t.State == tenant.StateSuspended {
		return errf(core.ESUSPENDED, "this tenant is suspended")
	}
	v, err := svc.Version(c.UserContext(), t.Scope(), docID, version)
	if err != nil {
		return err
	}
	return s.sendContent(c, svc, t.ID, v)
}
