package api

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/promanage/promanage/tenant"
	"io"
	"mime"
	"slices"
	"strconv"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/promanage/promanage/core"
)

// readOnlyFields may appear in a body (a client echoing a resource back) but
// are never applied: ids, ownership, versions and computed values are the
// server's.
var readOnlyFields = []string{"id", "tenant_id", "tenant", "created_by", "created_at", "updated_at",
	"version", "etag", "overdue", "budget_summary", "progress", "state", "role"}

// decodeObject reads a JSON object body into its members. Members outside
// writable are ignored when read-only and rejected otherwise (422), so a
// typo or a mass-assignment attempt is never silently applied.
func decodeObject(c *fiber.Ctx, writable ...string) (map[string]json.RawMessage, error) {
	ct := c.Get(fiber.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && mt != "application/merge-patch+json") {
		return nil, errf(core.EUNSUPPORTED, "the body must be application/json")
	}
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && enc != "identity" {
		// c.Body() would inflate it without a limit (a compression bomb).
		return nil, errf(core.EUNSUPPORTED, "compressed request bodies (Content-Encoding) are not accepted")
	}
	body, err := jsonBody(c)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, core.Invalid(core.FieldError{Field: "body", Message: "a JSON object is required"})
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, core.Invalid(core.FieldError{Field: "body", Message: "must be a JSON object"})
	}
	var fields []core.FieldError
	for k := range m {
		if slices.Contains(writable, k) {
			continue
		}
		if slices.Contains(readOnlyFields, k) {
			delete(m, k)
			continue
		}
		fields = append(fields, core.FieldError{Field: k, Message: "unknown field"})
	}
	if len(fields) > 0 {
		slices.SortFunc(fields, func(a, b core.FieldError) int { return cmpString(a.Field, b.Field) })
		return nil, core.Invalid(fields...)
	}
	return m, nil
}

// maxJSONBody caps a JSON request body.
const maxJSONBody = 1 << 20

// jsonBody returns the request body, at most maxJSONBody bytes (413 beyond).
// With StreamRequestBody the body may still be an unread stream (bodyGuard
// buffers it for JSON routes, but a handler may be mounted elsewhere): it is
// then read through a limited reader, never with c.Body(), which would read
// an unbounded stream into memory.
func jsonBody(c *fiber.Ctx) ([]byte, error) {
	tooLarge := errf(core.ETOOLARGE, "the JSON body exceeds "+strconv.Itoa(maxJSONBody)+" bytes")
	if c.Request().Header.ContentLength() > maxJSONBody {
		return nil, tooLarge
	}
	var r io.Reader
	if sb, ok := requestBody(c); ok {
		r = sb
	} else if st := c.Context().RequestBodyStream(); st != nil {
		r = st
	}
	if r == nil {
		body := c.Body()
		if len(body) > maxJSONBody {
			return nil, tooLarge
		}
		return body, nil
	}
	body, err := io.ReadAll(io.LimitReader(r, maxJSONBody+1))
	if err != nil {
		return nil, core.Invalid(core.FieldError{Field: "body", Message: "the body could not be read"})
	}
	if len(body) > maxJSONBody {
		return nil, tooLarge
	}
	return body, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// field decodes member name of m into dst if present; present reports it.
func field(m map[string]json.RawMessage, name string, dst any, errs *[]core.FieldError) (present bool) {
	raw, ok := m[name]
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		msg := "has the wrong type"
		var ue *json.UnmarshalTypeError
		if !asTypeError(err, &ue) && err.Error() != "" {
			msg = err.Error()
		}
		*errs = append(*errs, core.FieldError{Field: name, Message: msg})
		return false
	}
	return true
}

func asTypeError(err error, target **json.UnmarshalTypeError) bool {
	e, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*target = e
	}
	return ok
}

func fieldsErr(errs []core.FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	return core.Invalid(errs...)
}

func pathUUID(c *fiber.Ctx, name, what string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Params(name))
	if err != nil {
		// An id that cannot exist is simply not found.
		return uuid.Nil, errf(core.ENOTFOUND, what+" not found")
	}
	return id, nil
}

func queryLimit(c *fiber.Ctx) (int, error) {
	s := c.Query("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > core.MaxLimit {
		return 0, core.Invalid(core.FieldError{Field: "limit", Message: "must be an integer from 1 to 200"})
	}
	return n, nil
}

// ifMatch returns the version named by If-Match: 428 without it, 412 if it is
// not an ETag this server made.
func ifMatch(c *fiber.Ctx) (int64, error) {
	h := c.Get(fiber.HeaderIfMatch)
	if h == "" {
		return 0, errf(core.EPRECONDREQ, "If-Match with the resource's ETag is required")
	}
	v, ok := core.ParseETag(h)
	if !ok {
		return 0, errf(core.EPRECONDITION, "If-Match does not match the resource's ETag")
	}
	return v, nil
}

// projectChild returns the project id (:id) and a nested resource's id from
// the path; an id that cannot exist is not found.
func projectChild(c *fiber.Ctx, param, what string) (projectID, id uuid.UUID, err error) {
	if projectID, err = pathUUID(c, "id", "project"); err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	id, err = pathUUID(c, param, what)
	return projectID, id, err
}

// deleteProjectChild answers DELETE .../projects/:id/<kind>/:<param> with del
// (204, or del's error).
func deleteProjectChild(c *fiber.Ctx, param, what string,
	del func(ctx context.Context, sc tenant.Scope, actor core.Actor, projectID, id uuid.UUID) error) error {
	pid, id, err := projectChild(c, param, what)
	if err != nil {
		return err
	}
	if err := del(c.UserContext(), currentTenant(c).Scope(), actor(c), pid, id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
